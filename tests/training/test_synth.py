"""SynthEarth: determinism, label/appearance alignment, ambiguity design, OEM layout on disk."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from metaseg.errors import ConfigError, UnknownNameError
from training import synth

REPO = Path(__file__).resolve().parents[2]


def test_same_seed_byte_identical_and_independent_of_other_tiles():
    a = synth.generate_tile("Cfa", size=96, seed=3, index=5)
    b = synth.generate_tile("Cfa", size=96, seed=3, index=5)
    assert a.image.tobytes() == b.image.tobytes()
    assert a.label.tobytes() == b.label.tobytes()
    assert a.image.shape == (96, 96, 3) and a.image.dtype == np.uint8
    assert a.label.shape == (96, 96) and a.label.dtype == np.uint8


def test_different_seed_or_index_gives_different_tiles():
    a = synth.generate_tile("Cfa", size=96, seed=0, index=0)
    b = synth.generate_tile("Cfa", size=96, seed=1, index=0)
    c = synth.generate_tile("Cfa", size=96, seed=0, index=1)
    assert not np.array_equal(a.image, b.image)
    assert not np.array_equal(a.image, c.image)


def test_labels_are_oem_raw_1_to_8_and_follow_materials():
    for i, zone in enumerate(synth.DEFAULT_ZONES):
        t = synth.generate_tile(zone, size=128, seed=7, index=i)
        assert t.label.min() >= 1 and t.label.max() <= 8  # raw 0 (unknown) never written
        lut = synth.zone_rule(zone).label_lut()
        np.testing.assert_array_equal(t.label, lut[t.material])


def test_label_classes_appear_where_their_texture_was_drawn():
    """Water pixels (river) are bluish-dark and smooth; roofs are where buildings are labelled."""
    found_river = found_roof = False
    for i in range(40):
        t = synth.generate_tile("Cfb", size=128, seed=11, index=i)
        img = t.image.astype(np.float32)
        if (t.material == synth.M_RIVER).sum() > 300:
            found_river = True
            river = img[t.material == synth.M_RIVER].mean(0)
            grass = img[t.material == synth.M_GRASS]
            assert river.sum() < grass.mean(0).sum()  # water is darker than the meadow
            assert (t.label[t.material == synth.M_RIVER] == synth.WATER).all()
        roof = t.material == synth.M_ROOF
        if roof.sum() > 300:
            found_roof = True
            assert (t.label[roof] == synth.BUILDING).all()
            assert (t.label[~roof] != synth.BUILDING).all()
    assert found_river and found_roof


def test_zone_pairs_share_images_but_flip_ambiguous_labels():
    """Same seed/index, partner zones: identical pixels, complementary ambiguous labels."""
    for zone in ("Af", "BWh", "Cfa", "Dfb"):
        partner = synth.partner_zone(zone)
        assert synth.zone_rule(partner).style == synth.zone_rule(zone).style
        a = synth.generate_tile(zone, size=128, seed=2, index=4)
        b = synth.generate_tile(partner, size=128, seed=2, index=4)
        np.testing.assert_array_equal(a.image, b.image)  # the image cannot reveal the zone
        amb = np.isin(a.material, [synth.M_STRIPED, synth.M_BRIGHT, synth.M_DARK])
        assert (a.label[amb] != b.label[amb]).all()
        np.testing.assert_array_equal(a.label[~amb], b.label[~amb])


def test_default_rules_are_distinct_and_closed_under_complement():
    bits = {synth.zone_rule(z).bits for z in synth.DEFAULT_ZONES}
    assert len(bits) == 8
    for z in synth.DEFAULT_ZONES:
        assert synth.partner_zone(synth.partner_zone(z)) == z
    # ambiguous materials are common enough to matter
    share = np.mean([
        np.isin(synth.generate_tile(z, 96, 0, i).material, [synth.M_STRIPED, synth.M_BRIGHT, synth.M_DARK]).mean()
        for i, z in enumerate(synth.DEFAULT_ZONES * 3)
    ])  # fmt: skip
    assert share > 0.12


def test_zone_parsing_and_errors():
    assert synth.parse_zones("cfa, bwh") == ("Cfa", "BWh")
    assert synth.parse_zones(None) == synth.DEFAULT_ZONES
    assert synth.zone_rule("Dfc").style == "cold" and synth.zone_rule("Am").bits == synth.zone_rule("Af").bits
    with pytest.raises(UnknownNameError):
        synth.parse_zones("Xx")
    with pytest.raises(ConfigError):
        synth.parse_zones("Cfa,Cfa")
    with pytest.raises(ConfigError):
        synth.parse_split_fractions("1,2")
    with pytest.raises(ConfigError):
        synth.generate_tile("Cfa", size=8)


def test_write_oem_layout_geotiff_and_manifest(tmp_path):
    import rasterio
    from rasterio.warp import transform as warp

    from metaseg.climate import lookup

    out = tmp_path / "se"
    manifest = synth.write_synthearth(
        out, n=10, size=64, seed=5, zones="Cfa,ET", split_fractions="0.6,0.2,0.2"
    )
    assert (out / "synthearth.json").is_file()
    assert json.loads((out / "synthearth.json").read_text())["tiles"] == manifest["tiles"]
    listed = []
    for split in ("train", "val", "test"):
        names = (out / f"{split}.txt").read_text().split()
        listed += names
    assert sorted(listed) == sorted(t["file"] for t in manifest["tiles"])
    assert len((out / "train.txt").read_text().split()) == 6
    assert {t["region"] for t in manifest["tiles"]} == {"synth_cfa", "synth_et"}
    for t in manifest["tiles"]:
        img_path = out / t["region"] / "images" / t["file"]
        lab_path = out / t["region"] / "labels" / t["file"]
        with rasterio.open(img_path) as src:
            assert src.count == 3 and src.dtypes[0] == "uint8" and src.crs is not None
            assert abs(src.transform.a - 0.5) < 1e-9 and src.width == 64
            img, tr, crs = src.read(), src.transform, src.crs
        with rasterio.open(lab_path) as src:
            assert src.count == 1 and src.transform == tr and src.crs == crs
            lab = src.read(1)
        ref = synth.generate_tile(t["zone"], size=64, seed=5, index=t["index"])
        np.testing.assert_array_equal(img.transpose(1, 2, 0), ref.image)
        np.testing.assert_array_equal(lab, ref.label)
        cx, cy = tr @ (32, 32)
        lon, lat = warp(crs, "EPSG:4326", [cx], [cy])
        assert lookup(lat[0], lon[0]).zone.code == t["zone"]
        assert abs(lat[0] - t["lat"]) < 1e-3 and abs(lon[0] - t["lon"]) < 1e-3


def test_cli_writes_set_and_rejects_bad_zone(tmp_path):
    out = tmp_path / "cli"
    cmd = [
        sys.executable,
        "-m",
        "training.synth",
        "--out",
        str(out),
        "--n",
        "4",
        "--size",
        "48",
        "--seed",
        "1",
        "--zones",
        "BWh",
        "--json",
        "--no-progress",
    ]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["n"] == 4 and summary["zones"] == ["BWh"]
    assert len(list((out / "synth_bwh" / "images").glob("synth_bwh_*.tif"))) == 4
    bad = subprocess.run(
        cmd[:7] + ["--zones", "Qq", "--no-progress"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Qq" in bad.stderr


def test_parallel_workers_write_identical_sets(tmp_path):
    a = synth.write_synthearth(tmp_path / "a", n=6, size=40, seed=4, zones="Aw,Dfb")
    b = synth.write_synthearth(tmp_path / "b", n=6, size=40, seed=4, zones="Aw,Dfb", workers=2)
    assert a["tiles"] == b["tiles"]
    for t in a["tiles"]:
        for sub in ("images", "labels"):
            pa = tmp_path / "a" / t["region"] / sub / t["file"]
            pb = tmp_path / "b" / t["region"] / sub / t["file"]
            assert pa.read_bytes() == pb.read_bytes()
    for split in ("train", "val", "test"):
        assert (tmp_path / "a" / f"{split}.txt").read_text() == (tmp_path / "b" / f"{split}.txt").read_text()


def test_workers_without_dask_generate_serially(tmp_path, monkeypatch, caplog):
    """The GPU machine has no Dask: --workers N must still write the same set, not die in the runner."""
    import builtins

    import training.synth.writer as gen

    real_import = builtins.__import__

    def no_dask(name, *args, **kwargs):
        if name.split(".")[0] in ("distributed", "dask") or name == "metaseg.runner":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    a = synth.write_synthearth(tmp_path / "a", n=4, size=32, seed=2, zones="Aw,Dfb")
    monkeypatch.setattr(gen, "_dask_available", lambda: False)
    monkeypatch.setattr(builtins, "__import__", no_dask)
    with caplog.at_level("WARNING"):
        b = synth.write_synthearth(tmp_path / "b", n=4, size=32, seed=2, zones="Aw,Dfb", workers=4)
    assert a["tiles"] == b["tiles"] and "serially" in caplog.text
    for t in a["tiles"]:
        assert (tmp_path / "a" / t["region"] / "images" / t["file"]).read_bytes() == \
            (tmp_path / "b" / t["region"] / "images" / t["file"]).read_bytes()


# ----------------------------------------------------------------------------- splits (issue 15)
@pytest.mark.parametrize("fractions", [(0.7, 0.15, 0.15), (0.8, 0.1, 0.1), (0.6, 0.2, 0.2)])
def test_splits_are_rounded_over_the_whole_set(fractions):
    """n = 3 … 50: every split with a non-zero fraction gets tiles; counts track n × fraction."""
    from training.synth import DEFAULT_ZONES, assign_splits

    for n in range(3, 51):
        split_of = assign_splits(n, DEFAULT_ZONES, fractions, seed=0)
        assert sorted(split_of) == list(range(n))
        counts = [sum(1 for s in split_of.values() if s == name) for name in ("train", "val", "test")]
        assert sum(counts) == n and min(counts) >= 1, (n, counts)
        if min(f * n for f in fractions) >= 1:
            assert all(abs(c - f * n) < 1 for c, f in zip(counts, fractions, strict=True)), (n, counts)
        # val and test come from as many zones as they have tiles
        for name, c in zip(("val", "test"), counts[1:], strict=True):
            zones = {DEFAULT_ZONES[i % len(DEFAULT_ZONES)] for i, s in split_of.items() if s == name}
            assert len(zones) == min(c, len(DEFAULT_ZONES), n), (n, name)
    assert assign_splits(24, DEFAULT_ZONES, (0.7, 0.15, 0.15), seed=3) == \
        assign_splits(24, DEFAULT_ZONES, (0.7, 0.15, 0.15), seed=3)
    # the reported cases: 24 used to give 16/0/8 and 40 gave 32/8/0
    from training.synth import split_counts

    assert split_counts(24, (0.7, 0.15, 0.15)) == (17, 4, 3)
    assert split_counts(40, (0.7, 0.15, 0.15)) == (28, 6, 6)
    assert split_counts(2, (0.7, 0.15, 0.15)) == (1, 1, 0) and split_counts(1, (0.7, 0.15, 0.15)) == (1, 0, 0)
    assert split_counts(10, (1.0, 0.0, 0.0)) == (10, 0, 0)
