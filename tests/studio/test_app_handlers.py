"""App handlers called directly (no server): locate, prompts, segment, review, label, errors.

Models are replaced by :class:`FakePredictor` (deterministic masks from the pixels and the prompt,
no torch), injected through ``studio.models.MODELS.set_factory``; one slow test runs the real
randomly initialised demo pair.
"""

from __future__ import annotations

import html
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from studio import session
from studio.tabs import api, describe, locate, segment
from studio.tabs import label as label_tab
from studio.tabs import models as models_tab
from studio.tabs import review as review_tab
from tests.fixtures.geotiffs import write_geotiff, write_photo

ROOT = Path(__file__).resolve().parents[2]
SYNTH = ROOT / "static" / "examples" / "synth" / "synth_cfa.tif"


# --------------------------------------------------------------------------- fake models
@dataclass
class _Pred:
    index: np.ndarray
    seconds: float = 0.01
    extra: dict = field(default_factory=dict)


class FakePredictor:
    """Stand-in for ``metaseg.inference.Predictor``: masks from pixel values (and prompt length).

    Large inputs report several "windows" through ``progress`` like the sliding window does.
    """

    def __init__(self, role: str, class_set: str = "openearthmap") -> None:
        from metaseg.classes import get_class_set

        self.role = role
        self.uses_text = role == "metasegnet"
        self.class_set = get_class_set(class_set)
        self.name = f"fake_{role}"
        self.meta = {"checkpoint_hash": f"fake-{role}"}
        self.device = "cpu"
        self.calls: list[str | None] = []

    def predict(self, rgb, prompt=None, *, progress=None, valid=None, **kwargs):
        rgb = np.asarray(rgb)
        k = self.class_set.num_classes
        if self.uses_text:
            if prompt is None:  # as the real Predictor: "" is a prompt (the `none` variant)
                raise ValueError("needs a prompt")
            index = ((rgb[..., 1].astype(np.int64) // 32) + len(prompt)) % k
        else:
            index = (rgb[..., 0].astype(np.int64) // 32) % k
        index = index.astype(np.uint8)
        if valid is not None:
            index[~np.asarray(valid, bool)] = 255
        windows = max(1, (rgb.shape[0] // 64) * (rgb.shape[1] // 64))
        for i in range(windows):
            if progress is not None:
                progress(i + 1, windows)
        self.calls.append(prompt)
        return _Pred(index=index)


def _px(image):
    """The pixels of a result picture: handlers return PNG files (new per result), not arrays."""
    from PIL import Image

    return np.asarray(Image.open(image).convert("RGB")) if isinstance(image, (str, Path)) else image


def fake_factory(role: str, source: str | None = None) -> FakePredictor:
    return FakePredictor(role)


@pytest.fixture
def fake_models():
    from studio import models

    models.MODELS.set_factory(fake_factory)
    yield models.MODELS
    models.MODELS.set_factory(None)


@pytest.fixture(scope="module")
def app_module():
    import app

    return app


@pytest.fixture
def geotiff(tmp_path):
    # A small uint16 4-band tile near Potsdam (Cfb) in UTM 33N.
    return write_geotiff(tmp_path / "potsdam tile (1).tif", 52.39, 13.06, crs="EPSG:32633", size=64,
                         bands=4, dtype="uint16")


def _load(app, path, class_set="openearthmap", state=None):
    return locate.on_tile(str(path), class_set, state)


# --------------------------------------------------------------------------- locate
def test_upload_geotiff_locates_and_copies_into_session(app_module, geotiff):
    out = _load(app_module, geotiff)
    state, loc_html, map_html, lat, lon, prompt, info, _dd, _table, preview, gt = out
    preview = _px(preview)
    assert state.location["source"] == "geotiff"
    assert state.location["zone"]["code"] == "Cfb"
    assert abs(lat - 52.39) < 0.01 and abs(lon - 13.06) < 0.01
    assert state.location["crs"] == "EPSG:32633" and state.location["bands"] == 4
    assert state.location["dtype"] == "uint16"
    # copied into the session folder under a name of our own, never the uploaded name
    assert Path(state.tile_path).parent == state.workdir
    assert "potsdam" not in Path(state.tile_path).name and Path(state.tile_path).suffix == ".tif"
    assert 'data-zone="Cfb"' in loc_html and "GeoTIFF georeference" in loc_html
    assert "<iframe" in map_html and "srcdoc=" in map_html
    page = html.unescape(map_html.split('srcdoc="', 1)[1].split('"', 1)[0])
    assert "L.polygon" in page and "metaseg-map-click" in page  # footprint + click bridge
    assert "cdn.jsdelivr" not in page and "code.jquery" not in page  # offline: no CDN assets
    assert "Cfb" in info and prompt.strip()
    assert preview.shape == (256, 256, 3) and preview.dtype == np.uint8  # a small tile is shown enlarged
    assert "No ground truth" in gt


def test_example_tile_brings_its_ground_truth(app_module):
    state = _load(app_module, SYNTH)[0]
    assert state.ground_truth is not None and state.ground_truth.shape == state.tile.rgb.shape[:2]
    assert state.ground_truth.max() < 8


def test_jpeg_with_exif_gps_is_located(app_module, tmp_path):
    jpg = write_photo(tmp_path / "photo.jpg", 1.35, 103.82, size=40)
    state, loc_html = _load(app_module, jpg)[:2]
    assert state.location["source"] == "exif" and state.location["zone"]["code"] == "Af"
    assert "EXIF" in loc_html and Path(state.tile_path).suffix == ".jpg"


def test_typed_and_clicked_coordinates(app_module):
    state = locate.on_coords(30.04, 31.24, "openearthmap", None)[0]  # Cairo
    assert state.location["source"] == "typed" and state.location["zone"]["code"] == "BWh"
    assert state.location["crs"] is None and state.location["width"] is None
    out = locate.on_map_click({"lat": 1.35, "lng": 103.82}, "openearthmap", state)  # Singapore
    state = out[0]
    assert state.location["source"] == "map" and state.location["zone"]["code"] == "Af"
    assert "Af" in out[6] and "map click" in out[1]
    # a map click keeps the map as it is in the browser
    assert not isinstance(out[2], str)


def test_ocean_and_no_location_fall_back_to_generic_prompt(app_module, tmp_path):
    out = locate.on_map_click({"lat": 0.0, "lng": -30.0}, "openearthmap", None)
    assert out[0].location["zone"]["reason"] == "ocean"
    assert "Ocean" in out[1] and "generic" in out[6]
    png = tmp_path / "plain.png"
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(png)
    state, loc_html = _load(app_module, png)[:2]
    assert state.location["source"] == "none" and state.location["lat"] is None
    assert "click the map" in loc_html


@pytest.mark.parametrize(
    ("make", "env", "match"),
    [
        (lambda p: p.write_bytes(b"not an image at all" * 10) and p, {}, "cannot read|unsupported|not a"),
        (lambda p: p.write_bytes(b"") or p, {}, "empty"),
        (lambda p: p.write_bytes(b"\0" * (2 * 2**20)) or p, {"METASEG_MAX_UPLOAD_MB": "1"}, "limit"),
        (None, {"METASEG_MAX_PIXELS": "100"}, "pixel|too large|limit"),
    ],
)
def test_bad_uploads_raise_gr_error(app_module, tmp_path, monkeypatch, geotiff, make, env, match):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    path = geotiff if make is None else tmp_path / "bad.tif"
    if make is not None:
        make(path)
    with pytest.raises(gr.Error, match=f"(?i){match}"):
        _load(app_module, path)


def test_invalid_coordinates_raise_gr_error(app_module):
    with pytest.raises(gr.Error, match="(?i)lat"):
        locate.on_coords(95, 10, "openearthmap", None)
    with pytest.raises(gr.Error):
        locate.on_coords(None, 10, "openearthmap", None)
    # a malformed click message is ignored, not an error
    out = locate.on_map_click({"lat": "x"}, "openearthmap", None)
    assert out[0].location is None


# --------------------------------------------------------------------------- describe
def test_save_restore_and_llm_disabled(app_module):
    from studio import prompt_store

    state = locate.on_coords(52.39, 13.06, "openearthmap", None)[0]
    first = state.prompt_id
    out = describe.on_save_prompt("Temperate test prompt: <b>red roofs</b>.", "openearthmap", state)
    state = out[0]
    store = prompt_store.get_store()
    rec = store.get(state.prompt_id)
    assert rec.version == 2 and rec.source == "user" and rec.parent_id == first
    assert rec.text == "Temperate test prompt: <b>red roofs</b>."
    out = describe.on_restore(first, "openearthmap", state)
    restored = store.get(out[0].prompt_id)
    assert restored.version == 3 and restored.text == store.get(first).text
    hist = out[4]
    assert list(hist["version"]) == [3, 2, 1]
    with pytest.raises(gr.Error, match="OPENAI"):
        describe.on_regenerate("openearthmap", state)
    assert describe.regen_button_state()[0]["interactive"] is False
    assert "250" in describe.on_prompt_edit("a short prompt")


def test_llm_regeneration_when_configured(app_module, monkeypatch):
    from tests.fixtures.openai_server import FakeOpenAIServer

    state = locate.on_coords(30.04, 31.24, "openearthmap", None)[0]
    with FakeOpenAIServer() as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
        monkeypatch.setenv("METASEG_LLM_MODEL", "tiny-model")
        from studio import prompt_store

        assert prompt_store.llm_status()[0]
        button, hint = describe.regen_button_state()  # decided when a page loads, not at import
        assert button["interactive"] is True and "tiny-model" in hint
        out = describe.on_regenerate("openearthmap", state)
    rec = prompt_store.get_store().get(out[0].prompt_id)
    assert rec.source == "llm:tiny-model" and rec.zone == "BWh" and rec.version == 2
    assert out[1] == rec.text and out[0] is state


def test_class_set_change_reloads_prompt(app_module):
    state = locate.on_coords(52.39, 13.06, "openearthmap", None)[0]
    out = describe.on_class_set("potsdam", state)
    assert "potsdam" in out[2] and "Cfb" in out[2] and out[1].strip()
    assert out[0].prompt_id != describe.on_class_set("openearthmap", state)[0].prompt_id


# --------------------------------------------------------------------------- segment / review / label
def test_segment_review_and_runs_logged(app_module, fake_models):
    from studio import prompt_store, scoring

    state = _load(app_module, SYNTH)[0]
    seen = []

    def progress(frac, desc=None):
        seen.append(frac)

    stored = prompt_store.get_store().get(state.prompt_id).text
    out = segment.on_segment(stored, 0.5, state, progress=progress)
    state, (ov_a, ov_b), dis, dis_txt, fractions, files, legend, status, gsd_html = out
    ov_a, ov_b, dis = _px(ov_a), _px(ov_b), _px(dis)
    assert ov_a.shape == ov_b.shape == state.tile.rgb.shape  # the two sides of the ImageSlider
    assert not np.array_equal(ov_a, ov_b)  # the fake models differ
    assert dis.shape == ov_a.shape and "disagree" in dis_txt
    assert list(fractions.columns) == ["class", "MetaSegNet %", "baseline %"]
    assert abs(fractions["MetaSegNet %"].sum() - 100) < 0.5
    assert [Path(f).suffix for f in files] == [".tif", ".tif"]  # georeferenced tile → GeoTIFF
    assert "backend torch" in status
    assert "0.5 m/px" in gsd_html and "⚠️" not in gsd_html  # SynthEarth's 0.5 m tiles match the model's range
    assert seen and max(seen) <= 1.0 and seen[-1] == pytest.approx(1.0)
    assert "bareland" in legend

    review = review_tab.on_review(state)
    metrics_html, iou, chart, only, only_legend, compare = review
    chart, only = _px(chart), _px(only)
    assert "mIoU" in metrics_html
    assert list(iou.columns) == ["class", "MetaSegNet IoU %", "baseline IoU %", "ΔIoU"]
    assert chart.ndim == 3 and chart.shape[2] == 3
    assert only.shape == ov_a.shape and "only MetaSegNet right" in only_legend
    runs = prompt_store.get_store().runs(state.tile_hash)
    assert {r["model_role"] for r in runs} == {"metasegnet", "baseline"}
    mseg = next(r for r in runs if r["model_role"] == "metasegnet")
    assert mseg["prompt_id"] == state.prompt_id and mseg["checkpoint_hash"] == "fake-metasegnet"
    from metaseg.classes import get_class_set

    expected = scoring.scores(state.prediction.metasegnet, state.ground_truth, get_class_set("openearthmap"))
    assert mseg["miou"] == pytest.approx(expected["miou"])
    # a second prompt version on the same tile shows up in the comparison table
    state = describe.on_save_prompt("another prompt", "openearthmap", state)[0]
    state = segment.on_segment("another prompt", 0.5, state, progress=progress)[0]
    compare = review_tab.on_review(state)[5]
    assert len(compare) == 4 and set(compare["prompt v"].dropna()) == {1, 2}

    # opacity changes re-blend without re-running the models
    calls = len(fake_models.get("metasegnet").predictor.calls)
    ov_full = segment.on_opacity(1.0, state)[0][0]
    assert len(fake_models.get("metasegnet").predictor.calls) == calls
    assert not np.array_equal(ov_full, segment.on_opacity(0.0, state)[0][0])


def test_large_tile_reports_window_progress(app_module, fake_models, tmp_path):
    png = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (256, 320, 3), dtype=np.uint8)).save(png)
    state = _load(app_module, png)[0]
    seen = []
    segment.on_segment("p", 0.5, state, progress=lambda f, desc=None: seen.append((f, desc)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert any("window 20/20" in (d or "") for _, d in seen)  # 4×5 windows per model


def test_unsaved_prompt_edit_is_not_logged_as_a_version(app_module, fake_models):
    from studio import prompt_store

    state = _load(app_module, SYNTH)[0]
    stored = prompt_store.get_store().get(state.prompt_id).text
    out = segment.on_segment(stored, 0.5, state, progress=lambda *a, **k: None)
    assert out[0].prediction.prompt_id == state.prompt_id and "not saved" not in out[-2]
    out = segment.on_segment(stored + " Edited.", 0.5, state, progress=lambda *a, **k: None)
    assert out[0].prediction.prompt_id is None and "not saved" in out[-2]
    review_tab.on_review(out[0])
    assert next(r for r in prompt_store.get_store().runs(state.tile_hash) if r["model_role"] == "metasegnet")[
        "prompt_id"] is None


def test_plain_png_downloads_png(app_module, fake_models, tmp_path):
    png = tmp_path / "plain.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 40, 3), dtype=np.uint8)).save(png)
    state = _load(app_module, png)[0]
    files = segment.on_segment("prompt", 0.4, state, progress=lambda *a, **k: None)[5]
    assert [Path(f).suffix for f in files] == [".png", ".png"]


def test_segment_needs_tile_and_prompt(app_module, fake_models):
    with pytest.raises(gr.Error, match="tile"):
        segment.on_segment("x", 0.5, None, progress=lambda *a, **k: None)
    state = _load(app_module, SYNTH)[0]
    with pytest.raises(gr.Error, match="prompt"):
        segment.on_segment("   ", 0.5, state, progress=lambda *a, **k: None)
    with pytest.raises(gr.Error, match="Segment"):
        review_tab.on_review(state)


def test_uploaded_label_is_decoded_and_checked(app_module, fake_models, tmp_path):
    from metaseg.classes import get_class_set

    state = _load(app_module, SYNTH)[0]
    state = segment.on_segment("p", 0.5, state, progress=lambda *a, **k: None)[0]
    cs = get_class_set("openearthmap")
    gt = np.zeros((256, 256), np.uint8)
    gt[:, 128:] = 5  # water
    raw = cs.encode(gt)
    path = tmp_path / "label.png"
    Image.fromarray(raw.astype(np.uint8)).save(path)
    state, msg = review_tab.on_label_upload(str(path), state)
    assert np.array_equal(state.ground_truth, gt) and "uploaded" in msg
    small = tmp_path / "small.png"
    Image.fromarray(raw[:10, :10].astype(np.uint8)).save(small)
    with pytest.raises(gr.Error, match="256"):
        review_tab.on_label_upload(str(small), state)


def test_painted_colours_map_to_nearest_class():
    from metaseg.classes import get_class_set

    cs = get_class_set("openearthmap")
    truth = np.arange(64, dtype=np.uint8).reshape(8, 8) % cs.num_classes
    rgb = np.asarray(cs.colors, dtype=np.int32)[truth]
    noisy = np.clip(rgb + np.random.default_rng(0).integers(-20, 21, rgb.shape), 0, 255).astype(np.uint8)
    assert np.array_equal(cs.nearest_index(noisy), truth)
    valid = np.ones((8, 8), bool)
    valid[0, 0] = False
    assert cs.nearest_index(noisy, valid)[0, 0] == 255
    rgba = np.dstack([noisy, np.full((8, 8), 255, np.uint8)])
    assert np.array_equal(cs.nearest_index(rgba), truth)


def test_label_paint_save_roundtrip(app_module, fake_models):
    from metaseg.classes import get_class_set
    from metaseg.geo import inspect_tile, read_label
    from studio import prompt_store

    state = _load(app_module, SYNTH)[0]
    state = segment.on_segment("p", 0.5, state, progress=lambda *a, **k: None)[0]
    update, legend, _brushes = label_tab.on_label_start("MetaSegNet prediction", state)
    value = update["value"]
    assert "building" in legend and len(update["brush"].colors) == 8
    cs = get_class_set("openearthmap")
    layer = np.zeros((256, 256, 4), np.uint8)  # the editor's stroke layer over the tile and the prediction
    layer[:20, :20] = (*cs.colors[7], 153)  # paint a building in the corner
    editor = {"background": value["background"], "layers": [layer], "composite": None}
    state, msg, labels, path, gt = label_tab.on_label_save(editor, state)
    assert "Saved label" in msg and Path(path).suffix == ".tif"
    assert "Ground truth loaded (saved label #" in gt  # the Locate panel says so too
    expected = state.prediction.metasegnet.copy()
    expected[:20, :20] = 7
    assert np.array_equal(state.ground_truth, expected)
    assert np.array_equal(read_label(path, cs), expected)  # official encoding on disk
    assert inspect_tile(path).crs == inspect_tile(SYNTH).crs  # georeferenced like the tile
    assert len(prompt_store.get_store().labels(state.tile_hash)) == 1 and len(labels) == 1
    table, zip_path = label_tab.on_labels_export(state)
    assert Path(zip_path).suffix == ".zip" and Path(zip_path).stat().st_size > 0
    with pytest.raises(gr.Error, match="tile"):
        label_tab.on_label_start("baseline prediction", session.SessionState())


def test_checkpoint_loading_errors_are_user_errors(app_module, tmp_path):
    from studio import models

    try:
        with pytest.raises(gr.Error, match="(?i)checkpoint|not found|missing|cannot"):
            models_tab.on_load_checkpoints(str(tmp_path / "missing.safetensors"), "")
    finally:
        models.MODELS.set_source("metasegnet", None)
        models.MODELS.set_source("baseline", None)


def test_env_checkpoint_sources(monkeypatch):
    from studio import models

    cache = models.ModelCache()
    assert cache.source_of("metasegnet") == "demo:metasegnet_demo"
    monkeypatch.setenv("METASEG_CHECKPOINT_BASELINE", "/models/base.safetensors")
    assert cache.source_of("baseline") == "/models/base.safetensors"
    cache.set_source("baseline", "org/model")
    assert cache.source_of("baseline") == "org/model"


def test_launch_settings_from_env(app_module, monkeypatch):
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7999")
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    monkeypatch.setenv("METASEG_MAX_UPLOAD_MB", "50")
    kw = app_module.launch_kwargs()
    assert kw["server_port"] == 7999 and kw["server_name"] == "0.0.0.0" and kw["max_file_size"] == "50mb"
    monkeypatch.delenv("GRADIO_SERVER_PORT")
    monkeypatch.delenv("GRADIO_SERVER_NAME")
    monkeypatch.delenv("METASEG_MAX_UPLOAD_MB")
    kw = app_module.launch_kwargs()
    assert kw["server_port"] == 7860 and kw["server_name"] == "127.0.0.1" and kw["max_file_size"] == "200mb"


def test_models_load_lazily_and_report_status(app_module, fake_models):
    assert fake_models.loaded("metasegnet") is None
    _state, table = models_tab.on_load_checkpoints("", "")
    assert list(table["model"]) == ["metasegnet", "baseline"]
    assert all(s.startswith("loaded") for s in table["status"])
    assert "demo:metasegnet_demo" in list(table["source"])


# --------------------------------------------------------------------------- API functions
def test_api_functions(app_module, geotiff, fake_models):
    loc = api.api_locate(str(geotiff), None, None)
    assert set(loc) >= {"lat", "lon", "source", "crs", "width", "height", "bands", "dtype", "zone"}
    assert loc["source"] == "geotiff" and loc["zone"]["code"] == "Cfb"
    typed = api.api_locate(None, -25.6, -54.4)
    assert typed["source"] == "typed" and typed["crs"] is None and typed["zone"]["code"] == "Cfa"
    with pytest.raises(gr.Error):
        api.api_locate(None, None, None)
    a, b, fr = api.api_segment(str(SYNTH), "")
    a, b = _px(a), _px(b)
    assert a.shape == b.shape == (256, 256, 3)
    assert set(fr) == {"metasegnet", "baseline"} and abs(sum(fr["baseline"].values()) - 1) < 1e-6
    rec = api.api_save_prompt("Cfa", "loveda", "A humid subtropical prompt.")
    assert rec["zone"] == "Cfa" and rec["class_set"] == "loveda" and rec["source"] == "user"
    assert set(rec) == {"id", "zone", "class_set", "text", "source", "parent_id", "token_count", "created_at"}


# --------------------------------------------------------------------------- safety and structure
def test_user_text_is_escaped():
    from studio import views

    loc = {"lat": 1.0, "lon": 2.0, "source": "<img src=x onerror=alert(1)>", "crs": "<b>x</b>",
           "width": 1, "height": 1, "bands": 1, "dtype": "uint8",
           "zone": {"code": "<script>", "name": "<i>n</i>", "group": "g", "color": "red;x"}}
    out = views.location_html(loc, note="<script>alert(1)</script>")
    assert "<script>" not in out and "<img" not in out and "<b>x" not in out and "<i>n" not in out


def test_sessions_are_isolated(app_module, geotiff):
    s1 = _load(app_module, geotiff)[0]
    s2 = _load(app_module, geotiff)[0]
    assert s1.session_id != s2.session_id and s1.workdir != s2.workdir
    assert Path(s1.tile_path).parent != Path(s2.tile_path).parent


def test_spaces_gpu_wrapper_is_noop_without_spaces():
    from studio import pair

    if "spaces" not in sys.modules:
        assert pair.run_pair is pair._run_pair


def test_import_is_light_and_loads_no_model():
    code = (
        "import sys, time; t=time.time(); import app; from studio.models import MODELS; "
        "print('torch' in sys.modules, MODELS.loaded('metasegnet') is None, "
        "hasattr(app, 'demo'))"
    )
    t0 = time.time()
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "True", "True"]
    assert time.time() - t0 < 120


@pytest.mark.slow
def test_real_random_models_segment(app_module):
    """The real Predictor pair (random image weights, real MiniLM) runs through the handlers."""
    from studio import models

    models.MODELS.set_factory(models.random_predictor)
    try:
        state = _load(app_module, SYNTH)[0]
        out = segment.on_segment("A temperate prompt.", 0.5, state, progress=lambda *a, **k: None)
        assert out[1][0].shape == (256, 256, 3)
        assert out[0].prediction.metasegnet.max() < 8
    finally:
        models.MODELS.set_factory(None)


def test_mercator_resampling_and_click_parsing():
    from studio import mapview

    # rows = latitude bands of 10°: 90..80 -> 0, ..., -80..-90 -> 17
    eq = np.repeat(np.arange(18, dtype=np.uint8)[:, None, None], 36, axis=1)
    merc = mapview.mercator_rows(eq, height=200)
    assert merc.shape == (200, 36, 1)
    assert merc[100, 0, 0] in (8, 9)  # the equator sits in the middle
    assert merc[0, 0, 0] == 0 and merc[-1, 0, 0] == 17  # ±85° bands at the edges
    # Mercator stretches high latitudes: the 60-70°N band takes more rows than the 0-10°N band
    assert (merc[:, 0, 0] == 2).sum() > (merc[:, 0, 0] == 8).sum()
    assert mapview.parse_click({"lat": 10, "lng": 20}) == (10.0, 20.0)
    assert mapview.parse_click('{"lat": -5.5, "lng": 100}') == (-5.5, 100.0)
    for bad in (None, {}, "", "nope", {"lat": "nan", "lng": 1}, {"lat": 1}, [1, 2]):
        assert mapview.parse_click(bad) is None


def test_map_page_is_offline_and_escapes_labels():
    from studio import mapview

    page = mapview.map_page(lat=10.0, lon=20.0, zone={"code": "Aw", "name": "<b>x</b>", "color": "#8080FF"},
                            label="<script>")
    assert "<script>alert" not in page and "&lt;b&gt;x" in page
    assert "https://cdn" not in page and "leaflet" in page.lower()
    assert "data:image/png;base64," in page  # Köppen overlay inlined
    frame = mapview.map_iframe(page)
    assert frame.startswith("<iframe") and "<script>" not in frame  # srcdoc is attribute-escaped


@pytest.mark.slow
def test_shipped_demo_weights_through_the_app(app_module):
    """Default model source (no factory, no env): the shipped demo pair segments and reviews an example."""
    from studio import models, prompt_store

    weights = ROOT / "metaseg" / "weights" / "metasegnet_demo.safetensors"
    assert weights.exists(), "the demo weights ship with the project"
    models.MODELS.set_factory(None)
    models.MODELS.clear()
    try:
        state = _load(app_module, SYNTH)[0]
        stored = prompt_store.get_store().get(state.prompt_id).text
        state = segment.on_segment(stored, 0.5, state, progress=lambda *a, **k: None)[0]
        assert models.MODELS.loaded("metasegnet").source == "demo:metasegnet_demo"
        html_metrics = review_tab.on_review(state)[0]
        assert "mIoU" in html_metrics
        runs = prompt_store.get_store().runs(state.tile_hash)
        assert all(r["miou"] is not None and 0 <= r["miou"] <= 1 for r in runs)
    finally:
        models.MODELS.clear()


# --------------------------------------------------------------------------- layout (DESIGN.md §6.1)
def test_each_tab_is_built_by_its_own_module():
    """app.py only assembles; no function creates more than one ``gr.Tab``; tab ids are unique."""
    import ast

    tabs_dir = ROOT / "studio" / "tabs"
    seen_ids = []
    for path in [ROOT / "app.py", *sorted(tabs_dir.glob("*.py"))]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            calls = [c for c in ast.walk(fn) if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute)
                     and c.func.attr == "Tab"]
            assert len(calls) <= 1, f"{path.name}:{fn.name} builds {len(calls)} tabs"
            if calls and path.name == "app.py":
                raise AssertionError("app.py builds a tab itself")
        if path.name == "app.py":
            handlers = [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("on_")]
            assert handlers == []
    import app

    for module in app.TABS:
        seen_ids.append(module.TAB_ID)
    assert len(seen_ids) == len(set(seen_ids)) and "segment" in seen_ids


def test_open_tile_hook_fills_prompt_and_selects_segment(app_module):
    """The hook other tabs (Experiments) use: a tile path + a prompt → Segment tab, ready to run."""
    from studio.tabs.common import Studio

    out = segment.open_tile(str(SYNTH), "An experiment's prompt.", "openearthmap", None)
    state = out[0]
    assert state.tile is not None and state.location["zone"]["code"] == "Cfa"
    assert out[5] == "An experiment's prompt."
    assert out[-1].selected == "segment"
    assert state.ground_truth is not None  # the example's ground truth comes along, as for an upload
    with gr.Blocks() as demo:
        ctx = Studio(demo=demo, state=gr.State())
        locate.build(ctx)
        with gr.Tabs() as ctx.tabs:
            describe.build(ctx)
            segment.build(ctx)
    assert len(segment.open_tile_outputs(ctx)) == len(out)
    assert out[-2] is False  # "Segment without a prompt" stays off for a real prompt
    kept = segment.open_tile(str(SYNTH), None, "openearthmap", None)
    assert kept[5] == services_store_text(kept[0]) and kept[-2] is False
    # the `none` variant's empty text: an empty box with "without a prompt" ticked, not the zone's prompt
    none = segment.open_tile(str(SYNTH), "", "openearthmap", None)
    assert none[5] == "" and none[-2] is True
    with pytest.raises(gr.Error, match="(?i)not found|no such|missing"):
        segment.open_tile(str(ROOT / "missing.tif"), "p", "openearthmap", None)


def services_store_text(state):
    from studio import prompt_store

    return prompt_store.get_store().get(state.prompt_id).text


# --------------------------------------------------------------------------- imagery, GSD, polygons (issue 15)
@pytest.fixture
def xyz_env(monkeypatch):
    from tests.fixtures.xyz_server import FakeXYZServer

    with FakeXYZServer() as srv:
        monkeypatch.setenv("METASEG_IMAGERY_URL", srv.template)
        monkeypatch.setenv("METASEG_IMAGERY_ATTRIBUTION", "Loopback tiles")
        yield srv


def test_fetch_imagery_then_segment_like_an_upload(xyz_env, fake_models, monkeypatch):
    state = locate.on_map_click({"lat": 46.95, "lng": 7.45}, "openearthmap", None)[0]
    out = locate.on_fetch_imagery(46.95, 7.45, "16", "openearthmap", state)
    state, loc_html, map_html, lat, lon, prompt, info, _dd, _t, preview, gt, file_box = out
    preview = _px(preview)
    assert file_box is None  # the upload box is emptied: the fetched tile is the session's tile
    assert state.location["source"] == "geotiff" and state.location["crs"] == "EPSG:3857"
    assert state.location["zone"]["code"] == "Cfb" and "Cfb" in info and prompt.strip()
    assert state.location["gsd_m"] == pytest.approx(1.629, rel=0.02)
    assert abs(lat - 46.95) < 1e-3 and abs(lon - 7.45) < 1e-3
    assert Path(state.tile_path).parent == state.workdir and preview.shape == (1024, 1024, 3)
    assert "Loopback tiles" in loc_html and "zoom 16" in loc_html and 'data-gsd="1.6' in loc_html
    assert "L.polygon" in html.unescape(map_html)  # the fetched footprint on the map
    seg = segment.on_segment(prompt, 0.5, state, progress=lambda *a, **k: None)
    assert _px(seg[1][0]).shape == (1024, 1024, 3) and "Done" in seg[7]
    assert "coarser" in seg[8] and "⚠️" in seg[8]  # 1.6 m/px under a 0.25-0.5 m model
    # the per-session rate limit, then the switch
    monkeypatch.setenv("METASEG_IMAGERY_PER_MINUTE", "1")
    other = session.SessionState()
    locate.on_fetch_imagery(46.95, 7.45, "auto", "openearthmap", other)
    with pytest.raises(gr.Error, match="too many"):
        locate.on_fetch_imagery(46.95, 7.45, "auto", "openearthmap", other)
    locate.on_fetch_imagery(46.95, 7.45, "15", "openearthmap", state)  # another session is not held up
    assert [p.name for p in state.workdir.glob("imagery-*.tif")] == [Path(state.tile_path).name]  # no pile-up
    monkeypatch.setenv("METASEG_IMAGERY_URL", "off")
    with pytest.raises(gr.Error, match="switched off"):
        locate.on_fetch_imagery(46.95, 7.45, "16", "openearthmap", session.SessionState())
    assert locate.imagery_controls()[0]["interactive"] is False
    with pytest.raises(gr.Error, match="(?i)click the map"):
        locate.on_fetch_imagery(None, None, "16", "openearthmap", None)


def test_imagery_server_down_is_a_clean_error(monkeypatch):
    from tests.fixtures.app_server import free_port

    monkeypatch.setenv("METASEG_IMAGERY_URL", f"http://127.0.0.1:{free_port()}/{{z}}/{{x}}/{{y}}.png")
    state = session.SessionState()
    with pytest.raises(gr.Error, match="unreachable") as err:
        locate.on_fetch_imagery(46.95, 7.45, "16", "openearthmap", state)
    assert "\n" not in err.value.message and state.tile is None
    assert locate.on_coords(46.95, 7.45, "openearthmap", state)[0].location["zone"]["code"] == "Cfb"
    assert locate.imagery_controls()[0]["interactive"] is True  # configured (the server may come back)


def test_gsd_far_outside_the_model_and_resampling(fake_models, tmp_path):
    coarse = write_geotiff(tmp_path / "landsat.tif", 52.39, 13.06, crs="EPSG:32633", size=64, pixel_size=30.0)
    state = _load(None, coarse)[0]
    note = segment.on_segment("p", 0.5, state, progress=lambda *a, **k: None)[-1]
    assert "29.9 m/px" in note and "60× coarser" in note and "0.25–0.5 m/px" in note  # UTM scale factor
    fine = write_geotiff(tmp_path / "drone.tif", 52.39, 13.06, crs="EPSG:32633", size=128, pixel_size=0.05)
    state = _load(None, fine)[0]
    out = segment.on_segment("p", 0.5, state, progress=lambda *a, **k: None)
    assert "finer" in out[-1] and "Resample" in out[-1]
    out = segment.on_segment("p", 0.5, state, None, True, progress=lambda *a, **k: None)
    assert "resampled to 0.25 m/px" in out[-1]
    seen = fake_models.get("metasegnet").predictor
    assert out[0].prediction.metasegnet.shape == (128, 128)  # back on the tile's grid
    assert len(seen.calls) == 3
    from studio import gsd

    small, valid = gsd.resample(np.zeros((128, 128, 3), np.uint8), np.ones((128, 128), bool), 5.0)
    assert small.shape == (26, 26, 3) and valid.shape == (26, 26)


def test_polygon_downloads_carry_class_and_area(fake_models, tmp_path):
    from pyogrio.raw import read as ogr_read

    from metaseg.classes import get_class_set

    # four flat quadrants → a handful of polygons from the fake models
    data = np.zeros((3, 64, 64), np.uint8)
    data[:, :32, 32:] = 40
    data[:, 32:, :32] = 100
    data[:, 32:, 32:] = 200
    tif = write_geotiff(tmp_path / "quads.tif", 52.39, 13.06, crs="EPSG:32633", size=64, bands=3,
                        dtype="uint8", pixel_size=0.5, data=data)
    state = _load(None, tif)[0]
    state = segment.on_segment("p", 0.5, state, progress=lambda *a, **k: None)[0]
    files = segment.on_polygons(state)
    assert [Path(f).suffix for f in files] == [".tif", ".tif", ".gpkg", ".geojson"]
    names = set(get_class_set("openearthmap").names)
    for f in files[2:]:
        meta, _fids, geoms, fields = ogr_read(f)
        cols = dict(zip(meta["fields"], fields, strict=True))
        assert {"class", "area_m2", "model"} <= set(cols) and set(cols["class"]) <= names and len(geoms) >= 2
        for role in ("metasegnet", "baseline"):
            total = cols["area_m2"][cols["model"] == role].sum()
            assert total == pytest.approx(64 * 64 * 0.25, rel=0.02)  # 32 m × 32 m on the ground
    png = tmp_path / "plain.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(png)
    state = segment.on_segment("p", 0.5, _load(None, png)[0], progress=lambda *a, **k: None)[0]
    with pytest.raises(gr.Error, match="georeference"):
        segment.on_polygons(state)


def test_review_numbers_match_hand_computed_values():
    """Per-class IoU, ΔIoU, mIoU, OA and mF1 shown in the Review tab for a known 4×4 pair."""
    import re

    from studio.session import PairPrediction

    gt = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2], [2, 2, 2, 255]], np.uint8)
    a = np.array([[0, 0, 1, 1], [0, 1, 1, 1], [2, 2, 2, 2], [2, 2, 1, 0]], np.uint8)
    b = np.array([[0, 1, 1, 1], [1, 1, 1, 1], [2, 2, 0, 0], [2, 2, 2, 2]], np.uint8)
    state = session.SessionState(tile_hash="f" * 64)
    state.prediction = PairPrediction(metasegnet=a, baseline=b, class_set="openearthmap", prompt_id=None,
                                      prompt_text="p")
    state.ground_truth, state.ground_truth_source = gt, "hand-made label"
    metrics, iou, _chart, _only, _legend, _cmp = review_tab.on_review(state)
    # counted by hand over the 15 labelled pixels (the ignore pixel is left out)
    iou_a = {"bareland": 3 / 4, "rangeland": 4 / 6, "developed space": 6 / 7}
    iou_b = {"bareland": 1 / 6, "rangeland": 4 / 7, "developed space": 5 / 7}
    f1_a, f1_b = [6 / 7, 8 / 10, 12 / 13], [2 / 7, 8 / 11, 10 / 12]
    rows = {r["class"]: r for r in iou.to_dict("records")}
    for name in iou_a:
        assert rows[name]["MetaSegNet IoU %"] == pytest.approx(100 * iou_a[name], abs=0.006)
        assert rows[name]["baseline IoU %"] == pytest.approx(100 * iou_b[name], abs=0.006)
        assert rows[name]["ΔIoU"] == pytest.approx(100 * (iou_a[name] - iou_b[name]), abs=0.006)
    for absent in ("road", "water", "building"):
        assert rows[absent]["MetaSegNet IoU %"] is None or np.isnan(rows[absent]["MetaSegNet IoU %"])
    cells = re.findall(r"<tr><td>(\w+)</td><td>([\d.]+)</td><td>([\d.]+)</td><td>([\d.]+)</td></tr>", metrics)
    shown = {m: tuple(float(v) for v in vals) for m, *vals in cells}
    miou_a, miou_b = sum(iou_a.values()) / 3, sum(iou_b.values()) / 3
    assert shown["MetaSegNet"] == pytest.approx((100 * miou_a, 100 * 13 / 15, 100 * sum(f1_a) / 3), abs=0.051)
    assert shown["Baseline"] == pytest.approx((100 * miou_b, 100 * 10 / 15, 100 * sum(f1_b) / 3), abs=0.051)
    delta = float(re.search(r"ΔmIoU \(MetaSegNet − baseline\): <b>([+-][\d.]+)</b>", metrics).group(1))
    assert delta == pytest.approx(100 * (miou_a - miou_b), abs=0.051)
    assert "hand-made label" in metrics
