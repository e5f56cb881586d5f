"""Dataset readers on tiny generated copies of the official layouts (tests/fixtures/datasets.py)."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image

from metaseg.climate import ZONES, lookup
from metaseg.errors import ConfigError, DatasetNotFoundError, UnknownNameError
from tests.fixtures.datasets import OEM_REGIONS, make_loveda, make_openearthmap, make_potsdam
from training.datasets import build_dataset, collate_samples, wrong_zone
from training.datasets.potsdam import TEST_TILES, split_tiles, window_starts
from training.datasets.prompts import WRONG_ZONE


class FakeStore:
    """Prompt store stand-in: the text names its zone, so tests can read which prompt was used."""

    def __init__(self) -> None:
        self.calls: list[tuple[str | None, str]] = []

    def current(self, zone, class_set):
        self.calls.append((zone, class_set))

        class Record:
            text = f"prompt for {zone or 'generic'} / {class_set}"

        return Record()


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("datasets")
    oem = make_openearthmap(base / "oem", n=8, size=48, seed=0)
    loveda = make_loveda(base / "loveda", n=2, size=40, seed=1)
    raw = make_potsdam(base / "potsdam_raw", size=(150, 200), seed=2)
    patches = base / "potsdam"
    manifest = split_tiles(raw, patches, patch=64)
    return {"oem": oem, "loveda": loveda, "potsdam_raw": raw, "potsdam": patches, "manifest": manifest}


# --------------------------------------------------------------------------- OpenEarthMap
def test_openearthmap_items_shapes_and_decoding(roots):
    ds = build_dataset("openearthmap", roots["oem"], "train", store=FakeStore())
    listed = (roots["oem"] / "train.txt").read_text().split()
    assert [s.id for s in ds.samples] == [n[:-4] for n in listed]
    item = ds[0]
    assert set(item) == {"image", "label", "prompt", "zone", "id"}
    assert item["image"].shape == (3, 48, 48) and item["image"].dtype == torch.float32
    assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0
    assert item["label"].shape == (48, 48) and item["label"].dtype == torch.int64
    region = item["id"].rsplit("_", 1)[0]
    with rasterio.open(roots["oem"] / region / "labels" / f"{item['id']}.tif") as src:
        raw = src.read(1).astype(np.int64)
    expected = np.where(raw == 0, 255, raw - 1)
    assert (raw == 0).any(), "fixture must contain unknown pixels"
    np.testing.assert_array_equal(item["label"].numpy(), expected)
    with rasterio.open(roots["oem"] / region / "images" / f"{item['id']}.tif") as src:
        rgb = src.read()
    np.testing.assert_allclose(item["image"].numpy(), rgb / 255.0, atol=1e-6)


def test_openearthmap_zones_from_georeference_and_generic_fallback(roots):
    store = FakeStore()
    ds = build_dataset("openearthmap", roots["oem"], "train", store=store)
    for i, sample in enumerate(ds.samples):
        region = sample.id.rsplit("_", 1)[0]
        where = OEM_REGIONS[region]
        expected = lookup(*where).zone.code if where else None
        assert ds.zones[i] == expected
        assert ds[i]["zone"] == expected
        assert ds[i]["prompt"] == f"prompt for {expected or 'generic'} / openearthmap"
    assert "BWh" in ds.zones or "BWh" in build_dataset("openearthmap", roots["oem"], "val", store=store).zones
    # prompt texts are fetched once per zone, not once per tile
    assert len(store.calls) == len(set(store.calls))


def test_prompt_modes(roots):
    climate = build_dataset("openearthmap", roots["oem"], "train", store=FakeStore())
    generic = build_dataset("openearthmap", roots["oem"], "train", prompt_mode="store-generic", store=FakeStore())
    paper = build_dataset("openearthmap", roots["oem"], "train", prompt_mode="generic", store=FakeStore())
    assert set(paper.prompts) == {"It is a remote sensing image."}
    none = build_dataset("openearthmap", roots["oem"], "train", prompt_mode="none", store=FakeStore())
    wrong = build_dataset("openearthmap", roots["oem"], "train", prompt_mode="wrong", store=FakeStore())
    assert all(p == "prompt for generic / openearthmap" for p in generic.prompts)
    assert all(p == "" for p in none.prompts)
    for z, pc, pw in zip(climate.zones, climate.prompts, wrong.prompts, strict=True):
        if z is None:
            assert pw == pc  # nothing to mismatch: generic
        else:
            assert pw == f"prompt for {wrong_zone(z)} / openearthmap" and pw != pc
    assert wrong.zones == climate.zones  # the item's zone stays the true zone
    with pytest.raises(ConfigError, match="prompt_mode"):
        build_dataset("openearthmap", roots["oem"], "train", prompt_mode="loud", store=FakeStore())


def test_wrong_zone_is_a_fixed_map_to_another_main_group():
    assert set(WRONG_ZONE) == set(ZONES)
    for code in ZONES:
        w = wrong_zone(code)
        assert w in ZONES and w[0] != code[0]
        assert wrong_zone(code) == w
    assert wrong_zone("Cfa") == "Dfb" and wrong_zone("Af") == "ET" and wrong_zone("BWh") == "Cfb"
    assert wrong_zone(None) is None
    with pytest.raises(ConfigError, match="zone"):
        wrong_zone("Xyz")


def test_openearthmap_test_split_without_labels(roots, tmp_path):
    import shutil

    root = tmp_path / "oem"
    shutil.copytree(roots["oem"], root)
    for name in (root / "test.txt").read_text().split():
        (root / name.rsplit("_", 1)[0] / "labels" / name).unlink()
    ds = build_dataset("openearthmap", root, "test", store=FakeStore())
    assert not ds.has_labels
    assert bool((ds[0]["label"] == 255).all())
    # a missing label in train is a layout error, not silent ignore
    first = (root / "train.txt").read_text().split()[0]
    (root / first.rsplit("_", 1)[0] / "labels" / first).unlink()
    with pytest.raises(DatasetNotFoundError, match="label"):
        build_dataset("openearthmap", root, "train", store=FakeStore())


def test_missing_layout_errors_say_what_was_expected(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"train\.txt"):
        build_dataset("openearthmap", tmp_path, "train", store=FakeStore())
    with pytest.raises(DatasetNotFoundError, match="images_png"):
        build_dataset("loveda", tmp_path, "train", store=FakeStore())
    with pytest.raises(DatasetNotFoundError, match="potsdam_split"):
        build_dataset("potsdam", tmp_path, "train", store=FakeStore())
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        build_dataset("openearthmap", tmp_path / "nope", "train", store=FakeStore())
    with pytest.raises(UnknownNameError, match="openearthmap"):
        build_dataset("imagenet", tmp_path, "train")


def test_resize_and_flips_keep_image_and_label_aligned(roots):
    plain = build_dataset("openearthmap", roots["oem"], "train", store=FakeStore())
    small = build_dataset("openearthmap", roots["oem"], "train", image_size=24, store=FakeStore())
    item = small[0]
    assert item["image"].shape == (3, 24, 24) and item["label"].shape == (24, 24)
    assert set(item["label"].unique().tolist()) <= set(plain[0]["label"].unique().tolist())
    aug = build_dataset("openearthmap", roots["oem"], "train", augment=True, store=FakeStore())
    base = plain[0]
    seen = set()
    torch.manual_seed(0)
    for _ in range(24):
        a = aug[0]
        for name, fn in {"id": lambda t: t, "h": lambda t: t.flip(-1), "v": lambda t: t.flip(-2),
                         "hv": lambda t: t.flip(-1).flip(-2)}.items():
            if torch.equal(fn(base["image"]), a["image"]):
                assert torch.equal(fn(base["label"]), a["label"])
                seen.add(name)
                break
        else:
            pytest.fail("augmented image is not a flip of the original")
    assert seen == {"id", "h", "v", "hv"}


def test_collate_keeps_none_zones(roots):
    ds = build_dataset("openearthmap", roots["oem"], "test", store=FakeStore())
    batch = collate_samples([ds[i] for i in range(len(ds))])
    assert batch["image"].shape == (len(ds), 3, 48, 48) and batch["label"].dtype == torch.int64
    assert None in batch["zone"] and len(batch["prompt"]) == len(ds)


# --------------------------------------------------------------------------- LoveDA
def test_loveda_splits_decoding_and_zone(roots):
    ds = build_dataset("loveda", roots["loveda"], "train", store=FakeStore())
    assert len(ds) == 4 and [s.id.split("/")[0] for s in ds.samples] == ["Urban", "Urban", "Rural", "Rural"]
    item = ds[0]
    assert item["zone"] == "Cfa" and item["prompt"] == "prompt for Cfa / loveda"
    raw = np.array(Image.open(roots["loveda"] / "Train" / "Urban" / "masks_png" / "0.png"))
    np.testing.assert_array_equal(item["label"].numpy(), np.where(raw == 0, 255, raw.astype(np.int64) - 1))
    assert item["label"].max() <= 255 and set(item["label"].unique().tolist()) <= set(range(7)) | {255}
    test = build_dataset("loveda", roots["loveda"], "test", store=FakeStore())
    assert len(test) == 4 and not test.has_labels and bool((test[0]["label"] == 255).all())
    val = build_dataset("loveda", roots["loveda"], "val", store=FakeStore())
    assert not ({s.id for s in val.samples} & {s.id for s in ds.samples})


# --------------------------------------------------------------------------- Potsdam
def test_window_starts_shift_the_last_patch_to_the_border():
    assert window_starts(6000, 1024, 1024) == [0, 1024, 2048, 3072, 4096, 4976]
    assert window_starts(150, 64, 64) == [0, 64, 86]
    assert window_starts(128, 64, 64) == [0, 64]
    assert window_starts(40, 64, 64) == [0]
    assert window_starts(200, 64, 32)[-1] == 136
    with pytest.raises(ConfigError):
        window_starts(100, 0, 10)


def test_potsdam_split_tool_layout_and_labels(roots):
    m = roots["manifest"]
    assert m["splits"] == {"train": ["2_11", "3_10"], "val": ["2_10"], "test": ["2_13"]}
    assert "2_13" in TEST_TILES
    assert m["patches"] == {"train": 24, "val": 12, "test": 12}  # 3 rows x 4 cols per 150x200 tile
    out = roots["potsdam"]
    names = sorted(p.name for p in (out / "test" / "images").glob("*.tif"))
    assert names[0] == "top_potsdam_2_13_y0000_x0000.tif" and names[-1] == "top_potsdam_2_13_y0086_x0136.tif"
    # the shifted last patch holds the tile's bottom-right corner pixels
    with rasterio.open(roots["potsdam_raw"] / "2_Ortho_RGB" / "top_potsdam_2_13_RGB.tif") as src:
        corner = src.read()[:, -64:, -64:]
    with rasterio.open(out / "test" / "images" / names[-1]) as src:
        np.testing.assert_array_equal(src.read(), corner)
        assert src.crs is not None  # georeference carried over

    train = build_dataset("potsdam", out, "train", store=FakeStore())
    test = build_dataset("potsdam", out, "test", store=FakeStore())
    assert len(train) == 24 and len(test) == 12
    item = train[0]
    assert item["image"].shape == (3, 64, 64) and item["label"].dtype == torch.int64
    # train patches use the full reference (no ignore), test patches the eroded one (black -> 255)
    assert not any(bool((train[i]["label"] == 255).any()) for i in range(len(train)))
    assert any(bool((test[i]["label"] == 255).any()) for i in range(len(test)))
    assert set(torch.cat([train[i]["label"].flatten() for i in range(6)]).unique().tolist()) <= set(range(6))
    assert item["zone"] == "Cfb" and test[0]["zone"] == "Cfb"
    assert item["prompt"] == "prompt for Cfb / potsdam"


def test_potsdam_without_georeference_uses_the_known_zone(tmp_path):
    raw = make_potsdam(tmp_path / "raw", tiles=("6_7",), size=(64, 64), georef=False)
    split_tiles(raw, tmp_path / "out", patch=64)
    from training.datasets.prompts import tile_zone

    ds = build_dataset("potsdam", tmp_path / "out", "train", store=FakeStore())
    assert tile_zone(ds.samples[0].image) is None  # no georeference to read ...
    assert ds.zones == ["Cfb"]  # ... so the class set's known zone is used


def test_potsdam_split_cli(tmp_path, capsys):
    import json

    from training.potsdam_split import main

    raw = make_potsdam(tmp_path / "raw", tiles=("2_14", "7_7"), size=(100, 100))
    assert main(["--src", str(raw), "--out", str(tmp_path / "out"), "--patch", "64", "--labels", "full"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["splits"]["test"] == ["2_14"] and summary["splits"]["train"] == ["7_7"]
    assert summary["patches"]["test"] == 4 and (tmp_path / "out" / "split.json").is_file()
    assert main(["--src", str(tmp_path / "empty"), "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1


# --------------------------------------------------------------------------- SynthEarth
def test_synthearth_reads_the_openearthmap_layout_with_manifest_zones(tmp_path):
    from training import synth
    manifest = synth.write_synthearth(tmp_path / "se", 4, size=32, seed=0, zones="Af,ET",
                                      split_fractions="1,0,0")
    ds = build_dataset("synthearth", tmp_path / "se", "train", store=FakeStore())
    assert len(ds) == 4 and ds.class_set.name == manifest["class_set"]
    expected = {t["file"][:-4]: t["zone"] for t in manifest["tiles"]}
    for i, s in enumerate(ds.samples):
        assert ds.zones[i] == expected[s.id]
        assert ds[i]["prompt"] == f"prompt for {expected[s.id]} / openearthmap"
    assert ds[0]["image"].shape == (3, 32, 32)


def test_real_prompt_store_texts_are_attached(roots, tmp_path):
    from prompts_db import PromptStore

    store = PromptStore(tmp_path / "p.sqlite")
    ds = build_dataset("loveda", roots["loveda"], "train", store=store)
    assert ds[0]["prompt"] == store.current("Cfa", "loveda").text and ds[0]["prompt"]
    wrong = build_dataset("loveda", roots["loveda"], "train", prompt_mode="wrong", store=store)
    assert wrong[0]["prompt"] == store.current("Dfb", "loveda").text != ds[0]["prompt"]
