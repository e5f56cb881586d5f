"""``python -m metaseg map``: inputs, per-tile zones and prompts, COG masks, polygons, summary, resume.

Most tests run the job with ``--workers 0`` (one Dask worker thread in the test process, so the
demo model loads once per session); ``test_done_when_two_workers`` is the smoke test of a real
local cluster; the separately started cluster and the killed worker are ``slow``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from metaseg.cli import main
from metaseg.errors import MetasegError
from metaseg.mapping import (
    MapJob,
    MapSettings,
    Source,
    TileTask,
    assign_ids,
    bundle_tasks,
    discover,
    map_tiles,
)
from tests.fixtures.mapping import CRSS, ZONES, write_catalog, write_item_collection, write_map_folder

REPO = Path(__file__).resolve().parents[2]
MODEL = ["--model", "metasegnet_demo"]
pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")


def _run(capsys, argv: list[str]) -> tuple[int, dict | None, str]:
    code = main(["map", *argv])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if "--json" in argv and out.strip() else None), err


def _layer(path: Path) -> tuple[dict, list[np.ndarray], list]:
    from pyogrio.raw import read

    meta, _, geoms, fields = read(str(path))
    return meta, fields, list(geoms)


def _mask(path: Path) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as ds:
        return ds.read(1), {"crs": ds.crs, "transform": ds.transform, "shape": ds.shape, "tags": ds.tags(),
                            "layout": ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT"), "nodata": ds.nodata}


@pytest.fixture(scope="module")
def tiles(tmp_path_factory) -> dict[str, Path]:
    return write_map_folder(tmp_path_factory.mktemp("tiles"), size=64)


@pytest.fixture(scope="module")
def mapped(tiles, tmp_path_factory) -> dict:
    """One in-process job over the folder (3 CRSs + a corrupt file), shared by several tests."""
    out = tmp_path_factory.mktemp("map") / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("METASEG_DB", str(out.parent / "metaseg.sqlite"))
        code = main(["map", str(tiles["iguacu"].parent), "--out", str(out), *MODEL, "--workers", "0", "--json"])
    summary = json.loads((out / "summary.json").read_text())
    return {"code": code, "out": out, "summary": summary}


# --------------------------------------------------------------------------- inputs
def test_discover_folders_recursive_any_case_and_excludes_output(tmp_path):
    (tmp_path / "a" / "deep").mkdir(parents=True)
    for name in ("a/x.tif", "a/deep/y.TIFF", "a/z.Tif", "a/notes.txt", "a/.hidden.tif", "a/out/masks/m.tif"):
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"II*\x00")
    found = discover([tmp_path / "a"], exclude=tmp_path / "a" / "out")
    assert [Path(s.path).name for s in found] == ["y.TIFF", "x.tif", "z.Tif"]
    # the same file twice (folder + file) is mapped once
    assert len(discover([tmp_path / "a", tmp_path / "a" / "x.tif"], exclude=tmp_path / "a" / "out")) == 3
    with pytest.raises(MetasegError, match="not found"):
        discover([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(MetasegError, match="no GeoTIFFs"):
        discover([tmp_path / "empty"])


def test_assign_ids_disambiguates_colliding_stems():
    sources = [Source("/d1/tile.tif", "tile"), Source("/d2/tile.tif", "tile"), Source("/d3/TILE.tiff", "TILE"),
               Source("/d1/other.tif", "other"), Source("https://x.org/a b.tif", "a b")]
    ids = assign_ids(sources)
    assert len(set(i.lower() for i in ids)) == len(ids)
    assert ids[3] == "other" and ids[4] == "a_b"
    assert all(i.startswith(("tile-", "TILE-")) for i in ids[:3])
    assert ids == assign_ids(sources)  # deterministic: a resumed job finds the same masks


def test_bundles_group_only_one_window_tiles():
    tasks = [TileTask(f"t{i}", f"/t{i}.tif", None, "p", size=(256, 256)) for i in range(5)]
    tasks += [TileTask("big", "/big.tif", None, "p", size=(2048, 2048)), TileTask("url", "http://x/u.tif", None, "p")]
    bundles = bundle_tasks(tasks, 2, 512)
    assert sorted(len(b) for b in bundles) == [1, 1, 1, 2, 2]
    assert sorted(t.id for b in bundles for t in b) == sorted(t.id for t in tasks)
    assert all(len(b) == 1 for b in bundle_tasks(tasks, 1, 512))


# --------------------------------------------------------------------------- bad arguments
@pytest.mark.parametrize("argv, message", [
    (["IN", "--out", "O"], "--model"),
    (["missing_dir", "--out", "O", *MODEL], "not found"),
    (["IN", "--out", "O", *MODEL, "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "exclude"),
    (["IN", "--out", "O", *MODEL, "--min-area", "-1"], "--min-area"),
    (["IN", "--out", "O", *MODEL, "--vector-crs", "EPSG:0"], "--vector-crs"),
    (["IN", "--out", "O", "--model", "nope"], "unknown model"),
    (["IN", "--out", "O", "--model", "metasegnet_swin_b"], "--checkpoint"),
    (["IN", "--out", "O", *MODEL, "--prompt", " "], "--prompt"),
    (["IN", "--out", "O", *MODEL, "--vector", "shp"], "invalid choice"),
])
def test_bad_arguments_exit_2_one_line(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    write_map_folder(tmp_path / "IN", size=16, corrupt=False)
    try:
        code = main(["map", *argv])
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "O" / "summary.json").exists()


# --------------------------------------------------------------------------- the job
def test_map_folder_three_crs_and_a_corrupt_file(mapped, tiles):
    summary, out = mapped["summary"], mapped["out"]
    assert mapped["code"] == 3
    assert {"tiles", "area_ha", "seconds"} <= set(summary)
    by_id = {t["id"]: t for t in summary["tiles"]}
    assert set(by_id) == {"iguacu", "potsdam", "desert", "corrupt"}
    for t in summary["tiles"]:
        assert {"path", "status", "zone", "reason", "seconds"} <= set(t)
    bad = by_id["corrupt"]
    assert bad["status"] == "failed" and "corrupt.tif" in bad["reason"] and "\n" not in bad["reason"]
    for name, zone in ZONES.items():
        rec = by_id[name]
        assert rec["status"] == "ok" and rec["zone"] == zone and rec["reason"] is None
        index, meta = _mask(out / "masks" / f"{name}.tif")
        with rasterio.open(tiles[name]) as src:
            assert (meta["crs"], meta["transform"], meta["shape"]) == (src.crs, src.transform, src.shape)
        assert meta["crs"] == rasterio.crs.CRS.from_user_input(CRSS[name])
        assert meta["layout"] == "COG" and meta["nodata"] == 255
        assert json.loads(meta["tags"]["CLASS_NAMES"])[0] == "bareland"
        assert index.max() < 8
    assert set(summary["area_ha"]) == set(ZONES.values())
    # polygons: class, zone, area_m2, tile; one tile -> its own zone
    meta, fields, geoms = _layer(out / "classes.gpkg")
    assert list(meta["fields"]) == ["class", "area_m2", "zone", "tile"]
    assert len(geoms) == summary["polygons"] > 0
    cls, area, zone, tile = fields
    assert set(tile) == set(ZONES) and all(ZONES[t] == z for t, z in zip(tile, zone, strict=True))
    assert (area > 0).all() and set(cls) <= {"bareland", "rangeland", "developed space", "road", "tree", "water",
                                              "agriculture land", "building"}
    # area report: hectares per zone x class, equal to the polygon areas
    total_ha = sum(sum(v.values()) for v in summary["area_ha"].values())
    assert total_ha == pytest.approx(area.sum() / 1e4, rel=1e-3)
    csv_rows = (out / "area_report.csv").read_text().splitlines()
    assert csv_rows[0] == "zone,class,hectares" and len(csv_rows) > 3
    assert "| Cfa |" in (out / "area_report.md").read_text()
    assert not list((out / "masks").glob(".*"))  # no temporary files left


@contextlib.contextmanager
def _touched(path: Path):
    """Change a shared input's mtime (a changed input for --resume), restoring it afterwards."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    try:
        yield
    finally:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_resume_skips_finished_tiles_and_keeps_polygons_once(mapped, tiles, capsys, tmp_path):
    out = tmp_path / "out"  # a copy: other tests compare with the shared job's masks
    shutil.copytree(mapped["out"], out)
    before = mapped["summary"]
    first = {n: _mask(out / "masks" / f"{n}.tif")[0] for n in ZONES}
    code, summary, _ = _run(capsys, [str(tiles["iguacu"].parent), "--out", str(out), *MODEL, "--workers", "0",
                                     "--resume", "--json"])
    assert code == 3
    status = {t["id"]: t["status"] for t in summary["tiles"]}
    assert status == {"iguacu": "skipped", "potsdam": "skipped", "desert": "skipped", "corrupt": "failed"}
    assert summary["polygons"] == before["polygons"] == len(_layer(out / "classes.gpkg")[2])
    assert summary["area_ha"] == before["area_ha"]
    # vector options are re-applied to skipped tiles; masks untouched
    code, summary, _ = _run(capsys, [str(tiles["iguacu"].parent), "--out", str(out), *MODEL, "--workers", "0",
                                     "--resume", "--min-area", "5000", "--json"])
    assert all(t["status"] in ("skipped", "failed") for t in summary["tiles"])
    assert 0 < summary["polygons"] < before["polygons"]
    assert summary["area_ha"] == before["area_ha"]  # statistics do not depend on --min-area
    for n in ZONES:
        np.testing.assert_array_equal(_mask(out / "masks" / f"{n}.tif")[0], first[n])
    # a changed input or prompt is mapped again
    with _touched(tiles["desert"]):
        code, summary, _ = _run(capsys, [str(tiles["iguacu"].parent), "--out", str(out), *MODEL, "--workers", "0",
                                         "--resume", "--json"])
    status = {t["id"]: t["status"] for t in summary["tiles"]}
    assert status["desert"] == "ok" and status["iguacu"] == "skipped"
    assert summary["polygons"] == before["polygons"]
    code, summary, _ = _run(capsys, [str(tiles["iguacu"]), "--out", str(out), *MODEL, "--workers", "0",
                                     "--resume", "--prompt", "Aerial image of forest.", "--json"])
    assert code == 0 and summary["tiles"][0]["status"] == "ok"


def test_local_stac_item_collection_and_catalog(tiles, tmp_path, capsys, mapped):
    good = {k: v for k, v in tiles.items() if k != "corrupt"}
    stac = write_item_collection(tmp_path / "stac" / "items.json", good)
    code, summary, _ = _run(capsys, [str(stac), "--out", str(tmp_path / "o1"), *MODEL, "--workers", "0", "--json"])
    assert code == 0
    assert {t["id"]: t["zone"] for t in summary["tiles"]} == ZONES
    for name in ZONES:  # same tiles, same masks as the folder job
        np.testing.assert_array_equal(_mask(tmp_path / "o1" / "masks" / f"{name}.tif")[0],
                                      _mask(mapped["out"] / "masks" / f"{name}.tif")[0])
    catalog = write_catalog(tmp_path / "catalog", {"iguacu": good["iguacu"], "desert": good["desert"]})
    code, summary, _ = _run(capsys, [str(catalog), "--out", str(tmp_path / "o2"), *MODEL, "--workers", "0",
                                     "--vector", "geojson", "--vector-crs", "EPSG:3857", "--json"])
    assert code == 0 and sorted(t["id"] for t in summary["tiles"]) == ["desert", "iguacu"]
    meta, _, geoms = _layer(tmp_path / "o2" / "classes.geojson")
    assert "3857" in meta["crs"] and len(geoms) == summary["polygons"] > 0
    # an asset key that is not there is a bad argument
    code = main(["map", str(stac), "--out", str(tmp_path / "o3"), *MODEL, "--asset", "nir"])
    assert code == 2 and "no asset 'nir'" in capsys.readouterr().err


def test_stac_over_http_loopback(tiles, tmp_path, capsys):
    root = tmp_path / "www"
    (root / "data").mkdir(parents=True)
    local = {k: shutil.copy(v, root / "data" / Path(v).name) for k, v in tiles.items() if k != "corrupt"}
    write_item_collection(root / "items.json", {k: Path(local[k]) for k in ("iguacu", "potsdam")})
    # the server runs in its own process, like a real one (GDAL's /vsicurl/ may hold this process's GIL)
    server = subprocess.Popen([sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1"], cwd=root,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = int(re.search(r"port (\d+)", server.stdout.readline()).group(1))
        base = f"http://127.0.0.1:{port}"
        code, summary, _ = _run(capsys, [f"{base}/items.json", f"{base}/data/desert.tiff", "--out",
                                         str(tmp_path / "o"), *MODEL, "--workers", "0", "--json"])
    finally:
        server.kill()
        server.wait(timeout=30)
    assert code == 0
    # STAC items: zone from the item's bbox; a plain GeoTIFF URL: from its header
    assert {t["id"]: t["zone"] for t in summary["tiles"]} == {"iguacu": "Cfa", "potsdam": "Cfb", "desert": "BWh"}
    assert all(t["path"].startswith("http://127.0.0.1") for t in summary["tiles"])
    _, meta = _mask(tmp_path / "o" / "masks" / "potsdam.tif")
    assert meta["crs"] == rasterio.crs.CRS.from_epsg(32633)


def test_colliding_stems_get_separate_masks(tiles, tmp_path, capsys):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    shutil.copy(tiles["iguacu"], tmp_path / "a" / "tile.tif")
    shutil.copy(tiles["desert"], tmp_path / "b" / "tile.tif")
    code, summary, _ = _run(capsys, [str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "o"),
                                     *MODEL, "--workers", "0", "--json", "--prompt", "Aerial image.",
                                     "--tiles-per-task", "2"])  # both tiles in one task
    assert code == 0
    masks = sorted(p.name for p in (tmp_path / "o" / "masks").glob("*.tif"))
    assert len(masks) == 2 and all(m.startswith("tile-") for m in masks)
    assert {t["zone"] for t in summary["tiles"]} == {"Cfa", "BWh"}


def test_export_folder_checkpoint_and_vision_only_model(tiles, tmp_path, capsys):
    """--checkpoint takes an export folder (model.safetensors + config.json); a baseline gets no prompt."""
    import torch

    from metaseg.checkpoints import save_checkpoint
    from metaseg.models import create_model

    torch.manual_seed(0)
    model = create_model("baseline_demo", pretrained="none", decoder_dim=16)
    save_checkpoint(model, tmp_path / "ck" / "best")
    export = tmp_path / "export"
    export.mkdir()
    shutil.copy(tmp_path / "ck" / "best.safetensors", export / "model.safetensors")
    shutil.copy(tmp_path / "ck" / "best.json", export / "config.json")
    code, summary, err = _run(capsys, [str(tiles["iguacu"]), "--out", str(tmp_path / "o"), "--checkpoint", str(export),
                                       "--workers", "0", "--prompt", "ignored", "--json"])
    assert code == 0 and "vision-only" in err
    assert summary["prompt"] is None and summary["tiles"][0]["prompt_id"] is None
    assert summary["tiles"][0]["status"] == "ok" and summary["class_set"] == "openearthmap"


def test_ocean_tile_gets_the_generic_prompt_and_unplaced_tiles_fail(tmp_path, capsys):
    from tests.fixtures.geotiffs import write_geotiff

    (tmp_path / "in").mkdir()
    write_geotiff(tmp_path / "in" / "ocean.tif", 0.0, -30.0, crs="EPSG:4326", size=32)
    write_geotiff(tmp_path / "in" / "plain.tif", crs=None, size=32)
    code, summary, _ = _run(capsys, [str(tmp_path / "in"), "--out", str(tmp_path / "o"), *MODEL, "--workers", "0",
                                     "--json"])
    assert code == 3
    by_id = {t["id"]: t for t in summary["tiles"]}
    assert by_id["plain"]["status"] == "failed" and "georeference" in by_id["plain"]["reason"]
    ocean = by_id["ocean"]
    assert ocean["status"] == "ok" and ocean["zone"] is None and ocean["prompt_id"] is not None
    assert list(summary["area_ha"]) == ["none"]


def test_job_without_mappable_tiles_leaves_an_empty_layer(tiles, tmp_path, capsys):
    code, summary, _ = _run(capsys, [str(tiles["corrupt"]), "--out", str(tmp_path / "o"), *MODEL, "--json"])
    assert code == 3 and summary["counts"]["failed"] == 1 and summary["area_ha"] == {}
    meta, _, geoms = _layer(tmp_path / "o" / "classes.gpkg")
    assert geoms == [] and list(meta["fields"]) == ["class", "area_m2", "zone", "tile"]
    assert "No tile was mapped" in (tmp_path / "o" / "area_report.md").read_text()


def test_resume_state_survives_interrupted_runs(tiles, tmp_path):
    """The summary's fingerprint is that of the mask on disk: a run interrupted before it rewrites
    a mask leaves the next --resume able to tell current masks from stale ones."""
    from metaseg.runner import ModelSpec

    out = tmp_path / "o"
    sources = discover([tiles["iguacu"], tiles["desert"]])

    def plan(prompt: str, resume: bool = True) -> tuple[MapJob, list[bool]]:
        job = MapJob(out, ModelSpec(name="metasegnet_demo"), MapSettings(out="", class_set="openearthmap"),
                     model_fingerprint="weights-1")
        tasks = job.plan(sources, lambda zone: (f"{prompt} {zone}", None), resume=resume)
        job.write_summary(0.0)  # what run() writes first; then imagine a crash
        return job, [t.skip for t in tasks]

    job, skips = plan("A", resume=False)
    assert skips == [False, False]
    (out / "masks").mkdir(parents=True)
    for rec in job.records:  # a finished run: masks written, records ok
        Path(rec.mask).write_bytes(b"mask")
        rec.status, rec.fingerprint = "ok", job._fingerprints[rec.id]
    job.write_summary(1.0)
    assert plan("A")[1] == [True, True]
    assert plan("A")[1] == [True, True]  # a resumed run that crashed at once changes nothing
    job, skips = plan("B")  # new prompt: masks are stale; crash before they are rewritten
    assert skips == [False, False] and all(r.status == "pending" for r in job.records)
    assert plan("A")[1] == [True, True]  # the masks on disk are still the "A" ones
    with _touched(tiles["desert"]):
        assert plan("A")[1] == [True, False]


def test_resume_with_another_model_fingerprint_says_why_in_one_line(tiles, tmp_path, caplog):
    """A folder written with another model (or by an older metaseg, whose model fingerprint was
    path + size + mtime based) has only stale masks: they are predicted again, and one warning
    line says so."""
    import logging

    from metaseg.runner import ModelSpec

    out = tmp_path / "o"
    sources = discover([tiles["iguacu"], tiles["desert"]])

    def plan(model_fp: str) -> tuple[MapJob, list[bool]]:
        job = MapJob(out, ModelSpec(name="metasegnet_demo"), MapSettings(out="", class_set="openearthmap"),
                     model_fingerprint=model_fp)
        return job, [t.skip for t in job.plan(sources, lambda zone: ("p", None), resume=True)]

    job, _ = plan("old-style-fingerprint")
    (out / "masks").mkdir(parents=True)
    for rec in job.records:
        Path(rec.mask).write_bytes(b"mask")
        rec.status, rec.fingerprint = "ok", job._fingerprints[rec.id]
    job.write_summary(1.0)
    with caplog.at_level(logging.WARNING, logger="metaseg.mapping"):
        caplog.clear()
        assert plan("old-style-fingerprint")[1] == [True, True]
        assert not caplog.records
        _, skips = plan("sha256-of-the-weights")
    assert skips == [False, False]  # as before: every mask is predicted again
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert "2 of 2 mask(s)" in lines[0] and "different model" in lines[0] and "older version" in lines[0]


def test_model_info_uses_the_checkpoint_identity():
    from metaseg.checkpoints import checkpoint_identity
    from metaseg.mapping import model_info

    identity = checkpoint_identity("metasegnet_demo", None)
    fp, class_set, uses_text = model_info("metasegnet_demo", None)
    assert fp == identity.sha256 and class_set == "openearthmap" and uses_text is True


def test_stacked_batches_equal_tile_by_tile(tiles, tmp_path):
    """The GPU path (one-window tiles of a task stacked, each with its own prompt) gives the masks
    of the one-tile-at-a-time path (run here on CPU)."""
    from metaseg.runner import ModelSpec

    spec = ModelSpec(name="metasegnet_demo")  # the CLI's spec: the model this process already loaded
    prompts = {"iguacu": "Aerial image, humid subtropical.", "potsdam": "Aerial image, temperate oceanic.",
               "desert": "Aerial image, hot desert."}
    bundle = [TileTask(n, str(tiles[n]), ZONES[n], prompts[n], size=(64, 64)) for n in ZONES]
    masks = {}
    for mode in (False, True):
        out = tmp_path / str(mode)
        settings = MapSettings(out=str(out), class_set="openearthmap", batch_tiles=mode)
        results = map_tiles(bundle, spec, settings)
        assert [r["status"] for r in results] == ["ok"] * 3
        masks[mode] = {n: _mask(out / "masks" / f"{n}.tif")[0] for n in ZONES}
    for n in ZONES:
        assert (masks[True][n] == masks[False][n]).mean() > 0.999


@pytest.mark.gpu
def test_cuda_worker_stacks_small_tiles(tiles, tmp_path):
    """On a CUDA worker the one-window tiles of a task are stacked by default (bf16 autocast);
    the masks agree with the CPU path on nearly every pixel."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from metaseg.runner import ModelSpec

    bundle = [TileTask(n, str(tiles[n]), ZONES[n], f"Aerial image, zone {ZONES[n]}.", size=(64, 64)) for n in ZONES]
    masks = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / device
        results = map_tiles(bundle, ModelSpec(name="metasegnet_demo", device=device),
                            MapSettings(out=str(out), class_set="openearthmap"))
        assert [r["status"] for r in results] == ["ok"] * 3 and results[0]["device"].startswith(device)
        masks[device] = {n: _mask(out / "masks" / f"{n}.tif")[0] for n in ZONES}
    for n in ZONES:
        assert (masks["cuda"][n] == masks["cpu"][n]).mean() > 0.97


def test_write_mask_cog(tmp_path):
    from metaseg.classes import get_class_set
    from metaseg.export import write_mask_cog

    cs = get_class_set("loveda")
    rng = np.random.default_rng(0)
    index = rng.integers(0, cs.num_classes, (1100, 1300)).astype(np.uint8)
    index[:20] = 255
    path = write_mask_cog(tmp_path / "m.tif", index, cs, "EPSG:32633", (368000.0, 0.5, 0.0, 5808000.0, 0.0, -0.5))
    with rasterio.open(path) as ds:
        np.testing.assert_array_equal(ds.read(1), index)
        assert ds.block_shapes == [(512, 512)] and ds.overviews(1) == [2, 4]
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and ds.compression.name == "deflate"
        assert ds.nodata == 255 and ds.colormap(1)[1][:3] == tuple(cs.colors[1])
        assert json.loads(ds.tags()["CLASS_NAMES"]) == list(cs.names) and ds.tags()["CLASS_SET"] == "loveda"
        assert ds.crs.to_epsg() == 32633 and ds.transform.c == 368000.0
    assert [p.name for p in tmp_path.iterdir()] == ["m.tif"]
    with pytest.raises(MetasegError, match="tif"):
        write_mask_cog(tmp_path / "m.png", index, cs)


# --------------------------------------------------------------------------- real clusters
def _cli(argv: list[str], env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "metaseg", "map", *argv], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def test_smoke_local_cluster_resume(mapped, tmp_path):
    """Smoke test of a real two-process local cluster (fast: a resumed job only re-vectorises the
    masks, so no worker loads a model): one outcome per tile, polygons written once."""
    out = tmp_path / "out"
    shutil.copytree(mapped["out"], out)
    before = mapped["summary"]
    tiles_dir = Path(next(t["path"] for t in before["tiles"] if t["id"] == "iguacu")).parent
    proc = _cli([str(tiles_dir), "--out", str(out), *MODEL, "--workers", "2", "--resume", "--json"],
                env={"METASEG_DB": str(mapped["out"].parent / "metaseg.sqlite")})
    assert proc.returncode == 3, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    assert summary["workers"] == 2
    assert {t["id"]: t["status"] for t in summary["tiles"]} == {**dict.fromkeys(ZONES, "skipped"), "corrupt": "failed"}
    assert summary["polygons"] == before["polygons"] == len(_layer(out / "classes.gpkg")[2])
    assert summary["area_ha"] == before["area_ha"]
    assert "tile/s" in proc.stderr  # the runner's progress bar: rate and ETA


@pytest.mark.slow
def test_done_when_two_workers(mapped, tiles, tmp_path):
    """The issue's command on a local cluster of two worker processes: same masks as in-process."""
    out = tmp_path / "out"
    proc = _cli([str(tiles["iguacu"].parent), "--out", str(out), *MODEL, "--workers", "2", "--json"])
    assert proc.returncode == 3, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    assert summary["workers"] == 2
    status = {t["id"]: (t["status"], t["zone"]) for t in summary["tiles"]}
    assert status == {**{n: ("ok", z) for n, z in ZONES.items()}, "corrupt": ("failed", None)}
    for n in ZONES:
        np.testing.assert_array_equal(_mask(out / "masks" / f"{n}.tif")[0],
                                      _mask(mapped["out"] / "masks" / f"{n}.tif")[0])
    assert summary["polygons"] == len(_layer(out / "classes.gpkg")[2])


class _Cluster:
    """``dask scheduler`` + ``dask worker`` subprocesses on 127.0.0.1, started from the repository
    root with PYTHONPATH (how a separately started cluster runs the project's code)."""

    def __init__(self, folder: Path, workers: int = 2) -> None:
        import time

        self.file = folder / "scheduler.json"
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
        self.procs = [subprocess.Popen(
            [*dask, "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file", str(self.file)],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
        deadline = time.monotonic() + 60
        while not self.file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        self.address = json.loads(self.file.read_text())["address"]
        self.workers = [subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", self.address, "--nthreads", "1", "--no-nanny",
             "--no-dashboard", "--name", f"w{i}"],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(workers)]
        self.procs += self.workers
        from distributed import Client

        self.client = Client(self.address, timeout=60)
        self.client.wait_for_workers(workers, timeout=120)

    def worker_address(self, name: str) -> str:
        return next(a for a, w in self.client.scheduler_info()["workers"].items() if w["name"] == name)

    def close(self) -> None:
        self.client.close()
        for p in reversed(self.procs):
            p.kill()
            p.wait(timeout=30)


@pytest.fixture()
def cluster(tmp_path):
    c = _Cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()


def _big_tiles(folder: Path, n: int = 6, size: int = 768) -> Path:
    """``n`` tiles of ``size``² (several windows each) from the Landsat crop, in UTM 21S."""
    from tests.fixtures.geotiffs import IGUACU_TIF, write_geotiff

    folder.mkdir(parents=True, exist_ok=True)
    with rasterio.open(IGUACU_TIF) as ds:
        px = ds.read()
    reps = -(-size // px.shape[1])
    big = np.tile(px, (1, reps, reps))[:, :size, :size]
    for i in range(n):
        write_geotiff(folder / f"t{i}.tif", -25.5 + 0.05 * i, -54.6, crs="EPSG:32721",
                      data=np.roll(big, 37 * i, axis=2), pixel_size=30.0)
    return folder


@pytest.mark.slow
def test_separate_cluster_identical_masks_and_killed_worker(mapped, tiles, cluster, tmp_path):
    import time

    # 1. the Done-when folder on a separately started cluster: identical masks
    out = tmp_path / "ext"
    proc = _cli([str(tiles["iguacu"].parent), "--out", str(out), *MODEL, "--scheduler", cluster.address, "--json"])
    assert proc.returncode == 3, proc.stderr[-2000:]
    for n in ZONES:
        np.testing.assert_array_equal(_mask(out / "masks" / f"{n}.tif")[0],
                                      _mask(mapped["out"] / "masks" / f"{n}.tif")[0])
    # 2. a clean run over multi-window tiles, then the same job with a worker killed mid-task
    folder = _big_tiles(tmp_path / "big")
    clean = tmp_path / "clean"
    proc = _cli([str(folder), "--out", str(clean), *MODEL, "--scheduler", cluster.address, "--json"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    clean_summary = json.loads(proc.stdout)
    killed = tmp_path / "killed"
    job = subprocess.Popen(
        [sys.executable, "-m", "metaseg", "map", str(folder), "--out", str(killed), *MODEL,
         "--scheduler", cluster.address, "--json"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    victim = cluster.worker_address("w0")
    deadline = time.monotonic() + 300

    def mapping_on_victim() -> bool:  # tiles are running (a mask is out) and the victim holds one
        busy = any(k.startswith("map_tiles") for k in cluster.client.processing().get(victim, ()))
        return busy and any((killed / "masks").glob("t*.tif"))

    while time.monotonic() < deadline and not mapping_on_victim():
        time.sleep(0.05)
    assert mapping_on_victim(), "the worker never got a tile"
    cluster.workers[0].kill()
    stdout, stderr = job.communicate(timeout=600)
    assert job.returncode == 0, stderr[-2000:]
    summary = json.loads(stdout)
    assert [t["status"] for t in summary["tiles"]] == ["ok"] * 6  # none lost
    assert summary["polygons"] == clean_summary["polygons"] == len(_layer(killed / "classes.gpkg")[2])  # none twice
    per_tile = {t["id"]: t["polygons"] for t in clean_summary["tiles"]}
    assert {t["id"]: t["polygons"] for t in summary["tiles"]} == per_tile
    for t in per_tile:
        np.testing.assert_array_equal(_mask(killed / "masks" / f"{t}.tif")[0], _mask(clean / "masks" / f"{t}.tif")[0])


def test_onnx_backend_maps_like_torch_and_says_so(mapped, tiles, tmp_path, capsys):
    """`--backend onnx`: the same masks as the torch job (to the pixel, bar ties), and the summary names it."""
    out = tmp_path / "onnx"
    code, summary, _ = _run(capsys, [str(tiles["iguacu"].parent), "--out", str(out), *MODEL, "--workers", "0",
                                     "--backend", "onnx", "--json"])
    assert code == 3 and summary["backend"] == "onnx" and mapped["summary"]["backend"] == "torch"
    for name in ZONES:
        onnx_mask, _ = _mask(out / "masks" / f"{name}.tif")
        torch_mask, _ = _mask(mapped["out"] / "masks" / f"{name}.tif")
        assert (onnx_mask == torch_mask).mean() >= 0.999, name
    code = main(["map", str(tiles["iguacu"].parent), "--out", str(tmp_path / "text"), *MODEL, "--workers", "0",
                 "--backend", "onnx"])
    assert code == 3 and "backend onnx" in capsys.readouterr().out
