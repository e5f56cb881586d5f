"""Issue 24, the logic behind a newcomer's path: tile loads all or nothing, files the project wrote
recognised as such, labels found by the tile's hash, location precedence, ``map`` skipping label
files, the Web Mercator latitude limit and the small fixes (each with the step that used to trip).

App handlers are called directly with the fake models of ``tests/studio/test_app_handlers.py``; the
browser walks the same steps in ``tests/studio/test_app_browser_newcomer.py``.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from metaseg.classes import get_class_set
from metaseg.errors import ImageryError, MetasegError, TileReadError
from studio import gsd, imagery, models, placement, polygons, scoring, session, views
from studio.tabs import describe, locate, segment
from studio.tabs import label as label_tab
from studio.tabs import models as models_tab
from studio.tabs import review as review_tab
from studio.tabs.common import new_tile_gate
from tests.fixtures.geotiffs import write_geotiff
from tests.studio.test_app_handlers import SYNTH, fake_factory  # noqa: F401 - fake_models fixture below

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
OEM = get_class_set("openearthmap")
NOOP = lambda *a, **k: None  # noqa: E731 - a progress callback that ignores its calls


@pytest.fixture
def fake_models():
    models.MODELS.set_factory(fake_factory)
    yield models.MODELS
    models.MODELS.set_factory(None)


@pytest.fixture
def colorado(tmp_path) -> Path:
    """A georeferenced tile near Boulder, Colorado (UTM 13N, 0.5 m pixels)."""
    return write_geotiff(tmp_path / "colorado.tif", 40.0, -105.27, crs="EPSG:32613", size=64, pixel_size=0.5)


# --------------------------------------------------------------------------- 1. all-or-nothing loads
def test_failed_load_keeps_the_tile_and_the_file_box_names_it(tmp_path, colorado):
    state = locate.on_tile(str(colorado), "openearthmap", None)[0]
    before = (state.tile_path, state.tile_hash, state.location)
    assert state.take_new_tile() is True and state.take_new_tile() is False  # the gate consumes it
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    with pytest.raises(gr.Error, match="empty"):
        locate.on_tile(str(empty), "openearthmap", state)
    assert (state.tile_path, state.tile_hash, state.location) == before  # nothing of the new file
    assert state.take_new_tile() is False  # so the results of the tile in use are not cleared
    out = locate.on_tile_failed("openearthmap", state)
    assert len(out) == 12 and "Could not open empty.tif" in out[1] and "Still using colorado.tif" in out[1]
    shown = out[-1]
    assert Path(shown).name == "colorado.tif" and Path(shown).read_bytes() == colorado.read_bytes()
    assert out[-3] is not None and "No ground truth" in out[-2]  # preview and status of the kept tile
    # the file box set back to the tile in use fires a change: the same tile again is no load at all
    again = locate.on_tile(shown, "openearthmap", state)
    assert all(isinstance(v, type(gr.skip())) for v in again) and state.take_new_tile() is False
    with pytest.raises(gr.Error):
        new_tile_gate(state)  # silent stop of the "tile_loaded" reactions


def test_failed_first_load_leaves_no_tile_and_an_empty_file_box(tmp_path):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"not a tiff at all")
    state = session.SessionState()
    with pytest.raises(gr.Error):
        locate.on_tile(str(bad), "openearthmap", state)
    out = locate.on_tile_failed("openearthmap", state)
    assert out[-1] is None and out[-3] is None and "No tile is loaded" in out[1] and "bad.tif" in out[1]


def test_shown_tile_name_is_sanitised(tmp_path, colorado):
    state = locate.load_tile(str(colorado), "openearthmap", session.SessionState(),
                             shown_name="../../etc/pass wd;$(x).tif")[0]
    shown = Path(state.shown_tile_file())
    assert shown.is_relative_to(state.workdir) and shown.name == "pass_wd___x.tif"


# --------------------------------------------------------------------------- 2. files the project wrote
def test_predicted_mask_is_read_as_indices_not_the_official_encoding(tmp_path):
    from metaseg.export import write_mask
    from metaseg.geo import inspect_tile, open_label

    tile = write_geotiff(tmp_path / "t.tif", 52.39, 13.06, crs="EPSG:32633", size=32, pixel_size=0.5)
    index = (np.arange(32 * 32).reshape(32, 32) % 8).astype(np.uint8)
    index[0, :4] = 255
    for name in ("m.tif", "m.png"):
        path = write_mask(tmp_path / name, index, OEM, inspect_tile(tile))
        got = open_label(path, OEM)
        assert np.array_equal(got.index, index), name  # not shifted by one: would score 0 mIoU
        assert "class indices" in got.note
    with pytest.raises(TileReadError, match="loveda"):
        open_label(tmp_path / "m.tif", "loveda")  # a mask of another class set is refused, clearly


def test_masks_written_before_the_encoding_tag_are_still_recognised():
    tags = {"CLASS_SET": "openearthmap", "CLASS_NAMES": json.dumps(list(OEM.names)), "IGNORE_VALUE": "255"}
    raw = np.array([[0, 7, 255]], np.uint8)
    assert OEM.decode_tagged(raw, tags)[0].tolist() == [[0, 7, 255]]
    saved = {"CLASS_SET": "openearthmap", "CLASS_NAMES": json.dumps(["no data", *OEM.names]), "IGNORE_VALUE": "0"}
    assert OEM.decode_tagged(np.array([[0, 1, 8]], np.uint8), saved)[0].tolist() == [[255, 0, 7]]


def test_untagged_index_looking_label_gets_a_warning_official_one_does_not():
    rng = np.random.default_rng(0)
    index_like = rng.integers(0, 8, (40, 40)).astype(np.uint8)  # 0..7, lots of zeros, never 8
    index, note = OEM.decode_tagged(index_like, {})
    assert note and "look like class indices 0–7" in note and "1–8" in note
    official = rng.integers(1, 9, (40, 40)).astype(np.uint8)
    official[:2] = 0  # a little no-data
    assert OEM.decode_tagged(official, {})[1] is None
    assert get_class_set("potsdam").index_encoding_hint(index_like) is None  # RGB sets: not applicable


def test_review_upload_of_a_predicted_mask_scores_it_right(tmp_path, fake_models):
    state = locate.on_tile(str(SYNTH), "openearthmap", None)[0]
    state = segment.on_segment("p", 0.5, state, progress=NOOP)[0]
    from metaseg.export import write_mask

    mask = write_mask(tmp_path / "pred.tif", state.prediction.baseline, OEM, state.tile.info)
    state, text = review_tab.on_label_upload(str(mask), state)
    assert "class indices" in text
    rev = scoring.review(state.prediction.metasegnet, state.prediction.baseline, state.ground_truth, OEM)
    assert rev["baseline"]["miou"] == pytest.approx(1.0)
    raw = tmp_path / "raw.png"  # such pixels without tags: a warning, never a silent 0
    pixels = state.prediction.baseline.copy()
    pixels[:, : pixels.shape[1] // 10] = 0  # class 0 (bareland) on a tenth of the tile
    Image.fromarray(pixels).save(raw)
    warned: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gr, "Warning", lambda msg, *a, **k: warned.append(msg))
        state, text = review_tab.on_label_upload(str(raw), state)
    assert text.startswith("⚠️") and warned and "class indices" in warned[0]


# --------------------------------------------------------------------------- 3. labels by the tile's hash
def test_saved_label_found_when_the_tile_is_opened_again(tmp_path, fake_models, monkeypatch, colorado):
    monkeypatch.setenv("METASEG_LABEL_DIR", str(tmp_path / "labels"))
    state = locate.on_tile(str(colorado), "openearthmap", None)[0]
    state = segment.on_segment("p", 0.5, state, progress=NOOP)[0]
    colours = OEM.colorize(state.prediction.metasegnet)
    # a dense colour mask as an API client sends it (no tile under it: issue 20b's editor format)
    state, msg, _table, _path, gt = label_tab.on_label_save({"background": None, "layers": [],
                                                             "composite": colours}, state)
    assert "Saved label #1" in msg and "Ground truth loaded (saved label #1" in gt
    saved_gt = state.ground_truth.copy()
    # the same session opens another tile, then the same file again, uploaded under another name
    other_tile = write_geotiff(tmp_path / "other.tif", 52.39, 13.06, crs="EPSG:32633", size=64, pixel_size=0.5)
    state = locate.on_tile(str(other_tile), "openearthmap", state)[0]
    assert state.ground_truth is None
    copy = tmp_path / "again.tif"
    shutil.copyfile(colorado, copy)
    out = locate.on_tile(str(copy), "openearthmap", state)
    fresh = out[0]
    assert "saved label #1" in out[-1] and "Found the label saved for this tile" in out[1]
    assert np.array_equal(fresh.ground_truth, saved_gt)
    # and through the hook the Experiments gallery uses
    opened = segment.open_tile(str(colorado), "x", "openearthmap", fresh)
    assert opened[0].ground_truth is not None and "saved label" in opened[10]
    # another visitor's session does not see this session's label (issue 21) unless the operator shares labels
    other = locate.on_tile(str(copy), "openearthmap", None)
    assert other[0].ground_truth is None and "Found the label saved" not in other[1]
    monkeypatch.setenv("METASEG_SHARE_LABELS", "1")
    shared = locate.on_tile(str(copy), "openearthmap", None)
    assert "saved label #1" in shared[-1]


# --------------------------------------------------------------------------- 4. map skips label files
def test_map_discovery_skips_label_and_mask_files(tmp_path):
    from metaseg.export import write_mask
    from metaseg.geo import inspect_tile
    from metaseg.mapping import discover, format_text, is_label_file

    folder = tmp_path / "area"
    folder.mkdir()
    tile = write_geotiff(folder / "a.tif", 52.39, 13.06, crs="EPSG:32633", size=32, pixel_size=0.5)
    shutil.copyfile(tile, folder / "a_label.tif")
    write_mask(folder / "prediction.tif", np.zeros((32, 32), np.uint8), OEM, inspect_tile(tile))
    skipped: list[str] = []
    found = discover([folder], excluded=skipped)
    assert [Path(s.path).name for s in found] == ["a.tif"]
    assert sorted(Path(p).name for p in skipped) == ["a_label.tif", "prediction.tif"]
    assert not is_label_file(tile) and is_label_file(folder / "metasegnet_mask.png")
    with pytest.raises(MetasegError, match="label or mask"):
        discover([folder / "a_label.tif"])
    summary = {"tiles": [], "counts": {"ok": 0, "skipped": 0, "failed": 0}, "seconds": 0.0, "out": "o",
               "polygons": 0, "vector": "v", "report": {"markdown": "r"}, "area_ha": {}, "label_files_skipped": 2}
    assert "2 label/mask file(s) not mapped" in format_text(summary)


def test_examples_folder_maps_only_imagery():
    from metaseg.mapping import discover

    root = Path(__file__).resolve().parents[1] / "static" / "examples"
    skipped: list[str] = []
    names = sorted(Path(s.path).name for s in discover([root], excluded=skipped))
    assert names == ["iguacu_landsat8.tif", "synth_af.tif", "synth_bwh.tif", "synth_cfa.tif", "synth_dfb.tif"]
    assert len(skipped) == 4 and all(p.endswith("_label.tif") for p in skipped)


# --------------------------------------------------------------------------- 5. location precedence
def test_point_precedence_keep_new_attach_free():
    fp = [[41.0, -106.0], [41.0, -104.0], [39.0, -104.0], [39.0, -106.0]]
    geo = {"source": "geotiff", "lat": 40.0, "lon": -105.0, "footprint": fp}
    assert placement.place_point(geo, 40.2, -105.1) == "keep"
    assert placement.place_point(geo, 64.84, -147.72) == "new"  # Fairbanks: never attached silently
    assert placement.place_point({"source": "none", "lat": None, "lon": None}, 64.84, -147.72) == "attach"
    assert placement.place_point(None, 64.84, -147.72) == "free"
    exif = {"source": "exif", "lat": 1.35, "lon": 103.82, "footprint": None}
    assert placement.place_point(exif, 1.3501, 103.8201) == "keep" and placement.place_point(exif, 1.4, 103.8) == "new"


def test_typed_coordinates_elsewhere_unload_the_tile(colorado):
    state = locate.on_tile(str(colorado), "openearthmap", None)[0]
    state.take_new_tile()
    zone = state.location["zone"]["code"]
    out = locate.on_coords(40.0, -105.27, "openearthmap", state)  # on the tile: its location stays
    assert out[0].tile is not None and out[0].location["source"] == "geotiff" and "lies on colorado.tif" in out[1]
    assert out[0].location["zone"]["code"] == zone and state.take_new_tile() is False
    out = locate.on_coords(64.84, -147.72, "openearthmap", state)  # Fairbanks
    state = out[0]
    assert state.tile is None and state.location["source"] == "typed" and state.location["zone"]["code"] == "Dfc"
    assert "unloaded" in out[1] and out[-1] is None and out[-3] is None and "No tile loaded" in out[-2]
    assert state.take_new_tile() is True  # the old tile's results get cleared
    click = locate.on_map_click({"lat": 40.0, "lng": -105.27}, "openearthmap", state)
    assert click[0].location["source"] == "map"  # no tile: a click is just a location


def test_point_locates_a_tile_without_a_location(tmp_path):
    png = tmp_path / "plain.png"
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(png)
    state = locate.on_tile(str(png), "openearthmap", None)[0]
    out = locate.on_coords(30.04, 31.24, "openearthmap", state)
    assert out[0].tile is not None and out[0].location["zone"]["code"] == "BWh" and "placed at this point" in out[1]
    assert out[0].location["width"] == 40


# --------------------------------------------------------------------------- 6. Web Mercator limit
def test_imagery_beyond_web_mercator_is_refused(tmp_path, monkeypatch):
    from metaseg.imagery import (
        MERCATOR_MAX_LAT,
        fetch_imagery,
        ground_resolution_m,
        window_around,
        window_centre_lat,
    )

    monkeypatch.setenv("METASEG_IMAGERY_URL", "http://127.0.0.1:9/{z}/{x}/{y}.png")
    for lat in (89.5, -85.06):
        with pytest.raises(ImageryError, match="Web Mercator"):
            fetch_imagery(lat, 10.0, 16, tmp_path / "x.tif")
    with pytest.raises(ImageryError, match="85.0511"):
        imagery.fetch_imagery(89.5, 10.0, 16, tmp_path / "x.tif", "s")
    # at the edge of the world image the window shifts: its GSD is that of its centre, as the tile says
    win = window_around(MERCATOR_MAX_LAT - 1e-6, 0.0, 16, 1024)
    centre = window_centre_lat(win)
    assert centre < MERCATOR_MAX_LAT - 1e-4
    assert ground_resolution_m(centre, 16) > ground_resolution_m(MERCATOR_MAX_LAT - 1e-6, 16)
    mid = window_around(46.95, 7.45, 16, 1024)
    assert window_centre_lat(mid) == pytest.approx(46.95, abs=0.01)


# --------------------------------------------------------------------------- 7. experiments: the none variant
def test_none_variant_segments_with_empty_text(fake_models):
    state = locate.on_tile(str(SYNTH), "openearthmap", None)[0]
    with pytest.raises(gr.Error, match="prompt is empty"):
        segment.on_segment("", 0.5, state, progress=NOOP)  # a cleared box is still refused
    out = segment.on_segment("", 0.5, state, no_prompt=True, progress=NOOP)
    assert "without a prompt" in out[-2]
    assert models.MODELS.get("metasegnet").predictor.calls[-1] == ""


# --------------------------------------------------------------------------- 8. describe history
def test_history_snippet_shows_where_versions_differ():
    common = "Temperate oceanic landscape with " * 10
    current, old = common + "red tile roofs.", common + "slate roofs."
    snippet = describe.diff_snippet(old, current)
    assert snippet.startswith("…") and "slate roofs." in snippet and snippet != describe.diff_snippet(current, current)
    assert describe.diff_snippet("Short.", current) == "Short."
    assert describe.diff_snippet(common, current).startswith("…")


def test_picking_a_version_shows_its_full_text():
    state = session.SessionState()
    text, *_ = describe.prompt_panel(state, "openearthmap")
    first = state.prompt_id
    long = text + " " + "More detail. " * 40
    describe.on_save_prompt(long, "openearthmap", state)
    picked = describe.on_pick_version(first, "openearthmap", state)
    assert picked["value"] == text and "Restore" in picked["label"]
    assert describe.on_pick_version(state.prompt_id, "openearthmap", state)["value"] == long


# --------------------------------------------------------------------------- 9. the small ones
def test_imagery_credit_is_not_prefixed_twice():
    assert views.imagery_credit("Imagery: 127.0.0.1:7911") == "Imagery: 127.0.0.1:7911"
    assert views.imagery_credit("Esri, Maxar") == "Imagery: Esri, Maxar"


def test_tiny_tiles_are_shown_enlarged():
    tiny = np.arange(41 * 41 * 3, dtype=np.uint8).reshape(41, 41, 3)
    big = views.display_image(tiny)
    assert big.shape == (287, 287, 3) and np.array_equal(big[::7, ::7], tiny)
    assert views.display_image(np.zeros((512, 300), np.uint8)).shape == (512, 300)


def test_resample_box_says_when_it_does_nothing():
    rng = (0.25, 0.5)
    assert "did nothing" in gsd.gsd_note(30.0, rng, None, resample_asked=True)
    assert "coarser" in gsd.gsd_note(30.0, rng, None, resample_asked=True)
    assert "already close" in gsd.gsd_note(0.4, rng, None, resample_asked=True)
    assert "unknown" in gsd.gsd_note(None, None, None, resample_asked=True)
    assert "did nothing" not in gsd.gsd_note(0.05, rng, 0.25, resample_asked=True)  # it did resample
    assert "did nothing" not in gsd.gsd_note(30.0, rng)


def test_polygons_drop_specks_by_default(tmp_path):
    from metaseg.geo import inspect_tile

    tile = write_geotiff(tmp_path / "t.tif", 52.39, 13.06, crs="EPSG:32633", size=64, pixel_size=0.5)
    info = inspect_tile(tile)
    mask = np.zeros((64, 64), np.uint8)
    mask[10:30, 10:30] = 7  # a 100 m² building
    mask[50, 50] = 3  # one 0.25 m² speck
    assert polygons.default_min_area_m2(0.5) == 4.0 and polygons.default_min_area_m2(None) == 1.0
    polygons.write_polygons({"m": mask}, list(OEM.names), info, tmp_path)
    kept = json.loads((tmp_path / "polygons.geojson").read_text())["features"]
    polygons.write_polygons({"m": mask}, list(OEM.names), info, tmp_path, min_area_m2=0)
    every = json.loads((tmp_path / "polygons.geojson").read_text())["features"]
    assert len(every) == len(kept) + 1 and {f["properties"]["class"] for f in kept} == {"bareland", "building"}
    with pytest.raises(MetasegError, match="0 or more"):
        polygons.write_polygons({"m": mask}, list(OEM.names), info, tmp_path, min_area_m2=-1)


def test_models_tab_error_does_not_send_the_user_to_the_models_tab(tmp_path):
    missing = str(tmp_path / "nothing_here.safetensors")
    with pytest.raises(gr.Error) as err:
        models_tab.on_load_checkpoints(missing, "")
    assert "Models tab" not in err.value.message and "did not change" in err.value.message
    assert models.MODELS.chosen_source("metasegnet") is None  # the previous (default) source is back
    models.MODELS.set_source("metasegnet", missing)
    try:
        with pytest.raises(MetasegError, match="Models tab"):  # from Segment, the hint is where to go
            models.segment_model("metasegnet")
    finally:
        models.MODELS.set_source("metasegnet", None)


def test_schema_upgrade_is_logged_only_when_it_happens(tmp_path, caplog):
    from prompts_db import PromptStore

    db = tmp_path / "p.sqlite"
    PromptStore(str(db)).close()
    with caplog.at_level(logging.INFO, logger="prompts_db"):
        PromptStore(str(db)).close()
    assert not [r for r in caplog.records if "upgraded from schema" in r.getMessage()]


def test_pretrained_hint_names_the_package_weights_for_the_demo_encoder():
    from metaseg.models.image_encoders import LITE0, pretrained_fix

    assert "pretrained=package" in pretrained_fix(LITE0, "timm/x")
    assert "pretrained=package" not in pretrained_fix("swin_base_patch4_window7_224", "timm/y")


def test_loveda_root_with_one_scene_is_a_valid_subset(tmp_path):
    from tests.fixtures.datasets import make_loveda
    from training.datasets.loveda import list_samples

    root = make_loveda(tmp_path / "loveda", n=2, size=32)
    shutil.rmtree(root / "Train" / "Urban")
    samples = list_samples(root, "train")
    assert samples and all(s.id.startswith("Rural/") for s in samples)
    with pytest.raises(MetasegError, match="Urban"):
        list_samples(root, "train", scenes=("Urban", "Rural"))  # asked for explicitly: still required
    shutil.rmtree(root / "Train" / "Rural")
    with pytest.raises(MetasegError):
        list_samples(root, "train")


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A random-weight MetaSegNet demo checkpoint with small heads (no package weights needed)."""
    torch = pytest.importorskip("torch")
    from metaseg.checkpoints import save_checkpoint
    from metaseg.models import create_model

    torch.manual_seed(0)
    model = create_model("metasegnet_demo", pretrained="none", caf_dim=32, caf_heads=2, decoder_dim=16,
                         embed_dim=32)
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "metasegnet_demo")


def test_predict_checkpoint_without_model_and_gsd_warning(tmp_path, capsys, tiny_checkpoint):
    from metaseg.cli import main

    coarse = write_geotiff(tmp_path / "landsat.tif", 52.39, 13.06, crs="EPSG:32633", size=48, pixel_size=30.0)
    code = main(["predict", str(coarse), "--checkpoint", str(tiny_checkpoint), "--prompt", "fields",
                 "--out", str(tmp_path / "m.tif"), "--json"])
    captured = capsys.readouterr()
    assert code == 0 and json.loads(captured.out)["model"] == "metasegnet_demo"  # the recorded variant
    assert "warning: the tile is 29.9 m/px" in captured.err and "coarser" in captured.err
    code = main(["predict", str(coarse), "--model", "baseline_demo", "--checkpoint", str(tiny_checkpoint),
                 "--prompt", "x", "--out", str(tmp_path / "n.tif")])
    assert code == 2 and "not 'baseline_demo'" in capsys.readouterr().err  # a given --model must match
    assert main(["predict", str(coarse), "--out", str(tmp_path / "o.tif")]) == 2
    assert "--model NAME" in capsys.readouterr().err


# --------------------------------------------------------------------------- item 4 (no page: the CLI)
@pytest.mark.slow
def test_readme_map_command_skips_the_label_files(tmp_path, capsys):
    """``metaseg map static/examples`` (the README's command): 5 tiles of imagery, not 9."""
    from metaseg.cli import main

    out = tmp_path / "map"
    code = main(["map", str(Path(__file__).resolve().parents[1] / "static" / "examples"), "--out", str(out), "--model", "metasegnet_demo",
                 "--workers", "0", "--json"])
    summary = json.loads((out / "summary.json").read_text())
    assert code == 0 and len(summary["tiles"]) == 5 and summary["label_files_skipped"] == 4
    assert not any(t["path"].endswith("_label.tif") for t in summary["tiles"])
    assert {"tiles", "area_ha", "seconds", "counts"} <= set(summary)
