"""Label editor and "Teach both models", handlers called directly (no server).

Models are the fakes of the app tests (``tests.studio.test_app_handlers.FakePredictor``); a model loaded
from a taught folder predicts differently (:class:`TaughtFake`), so "after teaching" is visible.
Fine-tuning is :func:`fake_finetune` (writes a folder, reports progress, takes a few ms) except in
the slow test that runs the real ``training.finetune`` for two steps.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from metaseg.classes import get_class_set
from metaseg.errors import MetasegError
from studio import teach
from studio.labels import label_file_tags
from studio.models import MODELS
from studio.prompt_store import get_store
from studio.session import SessionState
from studio.tabs import label as label_tab
from studio.tabs import locate, segment
from studio.tabs import teach as teach_tab
from tests.studio.test_app_handlers import SYNTH, FakePredictor

CS = get_class_set("openearthmap")
BWH = SYNTH.with_name("synth_bwh.tif")
NO_PROGRESS = {"progress": lambda *a, **k: None}


class TaughtFake(FakePredictor):
    """What a taught folder loads as: every pixel is 'road' (3)."""

    def predict(self, rgb, prompt=None, **kwargs):
        out = super().predict(rgb, prompt, **kwargs)
        out.index[out.index != 255] = 3
        return out


def factory(role: str, source: str | None = None):
    return TaughtFake(role) if source and "taught" in Path(str(source)).parts else FakePredictor(role)


calls: list[dict] = []


def fake_finetune(base, samples, *, out, class_set=None, budget_s=None, steps=None, progress=None, cancel=None,
                  **kwargs):
    calls.append(dict(base=base, samples=list(samples), class_set=class_set, budget_s=budget_s, steps=steps,
                      seed=kwargs.get("seed"), prompt_for=kwargs.get("prompt_for")))
    for i in range(3):
        if progress:
            progress(i / 3, f"step {i + 1}/3")
    out = Path(out)
    out.mkdir(parents=True)
    (out / "config.json").write_text("{}")
    return {"checkpoint": str(out), "base": base, "class_set": class_set, "steps": steps or 3, "seconds": 0.5,
            "labelled_pixels": 1, "tiles": len(samples)}


@pytest.fixture(autouse=True)
def models(monkeypatch, tmp_path):
    monkeypatch.setenv("METASEG_SESSION_DIR", str(tmp_path / "sessions"))
    MODELS.set_factory(factory)
    teach.TEACHER.finetune = fake_finetune
    calls.clear()
    yield
    MODELS.set_factory(None)
    teach.TEACHER.finetune = None
    for sid in list(teach.TEACHER._jobs):
        teach.TEACHER.cancel(sid)


def _tile(path=SYNTH, state=None) -> SessionState:
    state = locate.on_tile(str(path), "openearthmap", state)[0]
    return segment.on_segment("a prompt", 0.5, state, **NO_PROGRESS)[0]


def _strokes(state: SessionState, start: str = label_tab.EMPTY, opacity: float = 0.6) -> dict:
    """Load the editor and paint two strokes as the browser does: class colour at the layer's opacity."""
    update, _legend, radio = label_tab.on_label_start(start, state, opacity, "openearthmap")
    value = update["value"]
    assert value["layers"] == []  # strokes go on the editor's own layer
    layer = np.zeros((*value["background"].shape[:2], 4), np.uint8)
    a = int(round(255 * opacity))
    layer[10:20, 10:60] = (*CS.colors[3], a)  # road
    layer[100:130, 100:120] = (*CS.colors[5], a)  # water
    layer[5, 5] = (*CS.colors[3], 4)  # an almost transparent pixel: too faint to tell its colour
    return {"background": value["background"], "layers": [layer], "composite": None}


def _teach_until_done(state: SessionState, budget: float = 10, wait_s: float = 10, **kw):
    teach_tab.on_teach(budget, "a prompt", state, **kw)
    end = time.monotonic() + wait_s
    while time.monotonic() < end:
        job = teach.TEACHER.job(state.session_id)
        if job is None or not job.active:
            break
        time.sleep(0.02)
    return teach_tab.on_teach_tick("a prompt", 0.5, state, "openearthmap", False)


# --------------------------------------------------------------------------- label editor
def test_editor_paints_over_the_tile_and_saves_sparse_labels_with_255():
    state = _tile()
    update, legend, radio = label_tab.on_label_start(label_tab.EMPTY, state, 0.6, "openearthmap")
    value = update["value"]
    assert np.array_equal(value["background"], state.tile.rgb[..., :3])  # the tile itself, not a mask
    assert value["layers"] == [] and state.label_start is None  # an empty start: nothing labelled yet
    assert [n for n, _v in radio["choices"]] == list(CS.names) and "road" in legend
    brush = update["brush"]
    assert brush.color_mode == "fixed" and len(brush.colors) == 8
    assert all(isinstance(c, tuple) and c[0].startswith("#") and c[1] == pytest.approx(0.6) for c in brush.colors)

    state, msg, _table, path, _gt = label_tab.on_label_save(_strokes(state), state, "openearthmap", "a prompt")
    assert "1,100 labelled pixels" in msg
    raw = np.asarray(Image.open(path)) if path.endswith(".png") else __import__("rasterio").open(path).read(1)
    assert set(np.unique(raw)) == {4, 6, 255}  # official codes road=4, water=6; unpainted = 255, never a class
    assert (raw == 255).sum() == 256 * 256 - 1100
    tags = label_file_tags(path)
    assert tags["CLASS_SET"] == "openearthmap" and tags["LABEL_ENCODING"] == "official"
    assert tags["UNLABELLED_VALUE"] == "255" and tags["LABELLED_PIXELS"] == "1100"
    from metaseg.geo import read_label

    back = read_label(path, CS)
    assert (back == 3).sum() == 500 and (back == 5).sum() == 600 and (back == 255).sum() == 256 * 256 - 1100
    assert np.array_equal(state.ground_truth, back)
    (lab,) = state.session_labels
    assert lab["class_set"] == "openearthmap" and lab["labelled_pixels"] == 1100 and lab["prompt"] == "a prompt"
    assert Path(lab["tile"]).is_file() and lab["id"] in state.label_ids


def test_brushes_named_by_class_and_the_eraser_unlabels():
    state = _tile()
    choices = label_tab.class_choices("openearthmap")
    assert choices[5] == ("water", "water|#0045ff") and label_tab.brush_class_name(choices[5][1]) == "water"
    assert label_tab.brush("openearthmap", 0.6, "water").default_color == ("#0045ff", 0.6)
    with pytest.raises(MetasegError, match="unknown class 'lava'"):
        label_tab.brush("openearthmap", 0.6, "lava")
    editor = _strokes(state)
    assert "set_brush_opacity" in label_tab.PICK_BRUSH_JS  # the opacity slider sets the brush in the browser
    erased = dict(editor, layers=[editor["layers"][0].copy()])
    erased["layers"][0][100:130, 100:120, 3] = 0  # the eraser leaves transparent pixels
    state, msg, *_ = label_tab.on_label_save(erased, state, "openearthmap")
    assert "500 labelled pixels" in msg and set(np.unique(state.ground_truth)) == {3, 255}


def test_dense_correction_from_a_prediction_keeps_working():
    state = _tile()
    editor = _strokes(state, start="MetaSegNet prediction", opacity=0.5)
    bg = editor["background"].astype(int)
    tile = state.tile.rgb[..., :3].astype(int)
    colours = CS.colorize(state.prediction.metasegnet).astype(int)
    assert np.abs(bg - (tile + colours) / 2).max() <= 1  # the prediction shown over the tile at the opacity
    state, msg, *_ = label_tab.on_label_save(editor, state, "openearthmap")
    expected = state.prediction.metasegnet.copy()
    expected[10:20, 10:60] = 3
    expected[100:130, 100:120] = 5
    assert np.array_equal(state.ground_truth, expected)  # the too-faint pixel keeps the prediction's class
    assert "65,536 labelled pixels" in msg


def test_label_errors_are_one_line_and_lose_nothing():
    state = _tile()
    with pytest.raises(gr.Error, match="Load a tile"):
        label_tab.on_label_start(label_tab.EMPTY, SessionState())
    with pytest.raises(gr.Error, match="Segment the tile first"):
        label_tab.on_label_start("baseline prediction", locate.on_tile(str(SYNTH), "openearthmap", None)[0])
    empty = label_tab.on_label_start(label_tab.EMPTY, state, 0.6, "openearthmap")[0]["value"]
    empty["layers"] = [np.zeros((256, 256, 4), np.uint8)]  # the editor's own layer, unpainted
    with pytest.raises(gr.Error, match="No labelled pixel"):
        label_tab.on_label_save(empty, state, "openearthmap")
    small = dict(empty, layers=[np.zeros((100, 80, 4), np.uint8)])
    with pytest.raises(gr.Error, match="80×100 but the tile is 256×256"):
        label_tab.on_label_save(small, state, "openearthmap")
    with pytest.raises(gr.Error, match="Nothing to save"):
        label_tab.on_label_save({"background": None, "layers": [], "composite": None}, state, "openearthmap")
    assert state.session_labels == [] and get_store().labels() == []


# --------------------------------------------------------------------------- teach both models
def test_teach_both_models_then_the_session_uses_its_taught_pair_and_another_keeps_the_shipped_one():
    state = _tile()
    other = _tile()
    before = other.prediction.metasegnet.copy()
    state = label_tab.on_label_save(_strokes(state), state, "openearthmap", "a prompt")[0]
    out = _teach_until_done(state, budget=10)
    state, text = out[0], out[1]
    assert "Taught both models" in text and "segmented again" in text
    assert [c["base"] for c in calls] == ["metasegnet_demo", "baseline_demo"]  # both, from the shipped pair
    a, b = calls
    assert a["samples"] == b["samples"] and a["budget_s"] == b["budget_s"] == 10.0 and a["seed"] == b["seed"]
    assert a["class_set"] == b["class_set"] == "openearthmap" and a["prompt_for"] is not None
    assert b["prompt_for"] is None  # the baseline reads no prompt
    name = teach.current_pair(state)
    assert name == "taught 1" and set(state.model_sources) == {"metasegnet", "baseline"}
    assert all(Path(p).is_dir() and Path(p).is_relative_to(state.workdir) for p in state.model_sources.values())
    assert set(np.unique(state.prediction.metasegnet)) == {3}  # re-segmented with the taught pair
    assert state.teach_seconds == pytest.approx(1.0)
    # another visitor: untouched
    assert other.model_sources == {}
    other = segment.on_segment("a prompt", 0.5, other, **NO_PROGRESS)[0]
    assert np.array_equal(other.prediction.metasegnet, before)


def test_keep_pick_in_models_and_experiments_use_the_taught_pair():
    from studio.experiments import model_args

    state = _tile()
    state = label_tab.on_label_save(_strokes(state), state, "openearthmap")[0]
    state = _teach_until_done(state)[0]
    state, text, choices = teach_tab.on_keep("farm tiles", state)
    assert "farm tiles" in text and "kept" in text and choices["value"] == "farm tiles"
    with pytest.raises(gr.Error, match="letters"):
        teach_tab.on_keep("<b>x</b>", state)
    state, table, text = teach_tab.on_pick_pair(teach_tab.DEFAULT_PAIR, state)
    assert state.model_sources == {} and "demo:metasegnet_demo" in table.to_string()
    state, table, text = teach_tab.on_pick_pair("farm tiles", state)
    assert "farm tiles" in text and "demo:" not in table.to_string()
    args = model_args(state.model_sources)  # what the Experiments tab runs
    assert args["checkpoint"] == state.taught["farm tiles"]["metasegnet"] and args["model"] is None
    with pytest.raises(gr.Error, match="no taught pair"):
        teach_tab.on_pick_pair("someone else's", state)
    choices, _ = teach_tab.on_models_select(state)
    assert choices["choices"] == [teach_tab.DEFAULT_PAIR, "farm tiles"]


def test_review_before_after_on_a_labelled_tile_not_used_for_teaching():
    state = _tile()
    state = label_tab.on_label_save(_strokes(state), state, "openearthmap")[0]
    state = _teach_until_done(state)[0]
    with pytest.raises(gr.Error, match="learned from"):
        teach_tab.on_before_after("a prompt", state)
    state = _tile(BWH, state)  # an example with its ground truth, not taught on
    table, text = teach_tab.on_before_after("a prompt", state)
    assert list(table.columns) == teach_tab.BEFORE_AFTER_COLS and table.iloc[-1]["class"] == "mIoU"
    gt = state.ground_truth
    road = table.set_index("class").loc["road"]
    expected_after = 100 * ((gt == 3).sum()) / ((gt != 255).sum())  # all-road prediction: IoU(road) = road share
    assert road["MetaSegNet after %"] == pytest.approx(expected_after, abs=0.06)
    assert "not used for teaching" in text and "demo:metasegnet_demo" in text


def test_teaching_errors_are_one_line_and_lose_nothing(monkeypatch, tmp_path):
    state = _tile()
    with pytest.raises(gr.Error, match="Save a label first"):
        teach_tab.on_teach(10, "a prompt", state)
    state = label_tab.on_label_save(_strokes(state), state, "openearthmap")[0]
    saved = [dict(x) for x in state.session_labels]
    monkeypatch.setenv("METASEG_TEACH_MAX_BUDGET_S", "30")
    with pytest.raises(gr.Error, match="over this server's cap of 30 s"):
        teach_tab.on_teach(60, "a prompt", state)
    with pytest.raises(gr.Error, match="at least 5 s"):
        teach_tab.on_teach(1, "a prompt", state)
    monkeypatch.setenv("METASEG_TEACH_SESSION_BUDGET_S", "40")
    with pytest.raises(gr.Error, match="40 s of its 40 s teaching budget left"):
        teach_tab.on_teach(25, "a prompt", state)
    monkeypatch.delenv("METASEG_TEACH_SESSION_BUDGET_S")
    # a label of another class set, a label whose size differs, a value that is no class, no labelled pixel
    lab = state.session_labels[0]
    bad_cases = []
    other_cs = dict(lab, class_set="loveda")
    bad_cases.append(([other_cs], "uses loveda classes but the models predict openearthmap"))
    small = tmp_path / "label_openearthmap_small.png"
    Image.fromarray(np.full((32, 32), 4, np.uint8)).save(small)
    bad_cases.append(([dict(lab, path=str(small))], "32x32|32×32"))
    nine = tmp_path / "label_openearthmap_nine.png"
    Image.fromarray(np.full((256, 256), 9, np.uint8)).save(nine)
    bad_cases.append(([dict(lab, path=str(nine))], "value 9, which is not a class of openearthmap"))
    blank = tmp_path / "label_openearthmap_blank.png"
    Image.fromarray(np.full((256, 256), 255, np.uint8)).save(blank)
    bad_cases.append(([dict(lab, path=str(blank))], "no labelled pixel"))
    monkeypatch.setenv("METASEG_TEACH_MAX_TILES", "2")
    bad_cases.append(([lab, lab, lab], "3 labelled tiles; one teaching job takes at most 2"))
    for labels, match in bad_cases:
        state.session_labels = labels
        with pytest.raises(gr.Error, match=match):
            teach_tab.on_teach(10, "a prompt", state)
    state.session_labels = saved
    monkeypatch.setenv("METASEG_TEACH_MAX_LABELLED_PIXELS", "1000")
    with pytest.raises(gr.Error, match="1,100 labelled pixels; one teaching job takes at most 1,000"):
        teach_tab.on_teach(10, "a prompt", state)
    assert calls == [] and state.model_sources == {} and state.session_labels == saved
    assert Path(saved[0]["path"]).is_file()


def test_one_job_per_session_and_a_bounded_queue(monkeypatch):
    release = threading.Event()

    def slow_finetune(*args, **kwargs):
        release.wait(10)
        return fake_finetune(*args, **kwargs)

    teach.TEACHER.finetune = slow_finetune
    monkeypatch.setenv("METASEG_TEACH_CONCURRENCY", "1")
    monkeypatch.setenv("METASEG_TEACH_QUEUE", "1")
    sessions = []
    for _ in range(3):
        s = _tile()
        sessions.append(label_tab.on_label_save(_strokes(s), s, "openearthmap")[0])
    try:
        teach_tab.on_teach(10, "a prompt", sessions[0])
        with pytest.raises(gr.Error, match="already running for this session"):
            teach_tab.on_teach(10, "a prompt", sessions[0])
        teach_tab.on_teach(10, "a prompt", sessions[1])  # waits in the queue
        assert teach.TEACHER.job(sessions[1].session_id).status == "queued"
        with pytest.raises(gr.Error, match="busy teaching other visitors"):
            teach_tab.on_teach(10, "a prompt", sessions[2])
        tick = teach_tab.on_teach_tick("a prompt", 0.5, sessions[0], "openearthmap", False)
        assert 'data-progress="' in tick[2] and tick[3].active  # progress shown, the timer keeps going
        # the interactive path is free while teaching runs
        assert segment.on_segment("a prompt", 0.5, sessions[2], **NO_PROGRESS)[0].prediction is not None
    finally:
        release.set()
    for s in sessions[:2]:
        for _ in range(200):
            if not teach.TEACHER.job(s.session_id).active:
                break
            time.sleep(0.02)
        assert teach_tab.on_teach_tick("a prompt", 0.5, s, "openearthmap", False)[0].model_sources


def test_a_failed_job_reports_one_line_and_keeps_the_models():
    def broken(*args, **kwargs):
        from metaseg.errors import ConfigError

        raise ConfigError("the label holds no class the model knows")

    teach.TEACHER.finetune = broken
    state = _tile()
    state = label_tab.on_label_save(_strokes(state), state, "openearthmap")[0]
    out = _teach_until_done(state)
    assert "Teaching stopped: the label holds no class the model knows" in out[1]
    assert out[0].model_sources == {} and out[0].taught == {}
    assert not list((state.workdir / "taught").glob("*/metasegnet"))  # nothing half-written kept


def test_a_gone_session_cancels_its_job():
    import app

    started = threading.Event()

    def waits(*args, cancel=None, **kwargs):
        started.set()
        assert cancel.wait(10)
        from metaseg.errors import MetasegError

        raise MetasegError("cancelled")

    teach.TEACHER.finetune = waits
    state = _tile()
    state = label_tab.on_label_save(_strokes(state), state, "openearthmap")[0]
    teach_tab.on_teach(10, "a prompt", state)
    job = teach.TEACHER.job(state.session_id)
    assert started.wait(10)
    app._drop_session(state)
    for _ in range(200):
        if not job.active:
            break
        time.sleep(0.02)
    assert job.status == "cancelled" and teach.TEACHER.job(state.session_id) is None


@pytest.mark.slow
def test_real_finetune_two_steps_teaches_a_loadable_pair():
    """The real ``training.finetune`` (2 steps each) on a painted label, then the taught pair
    loads through the app's model cache (real checkpoints, no fakes)."""
    MODELS.set_factory(None)
    teach.TEACHER.finetune = None
    state = locate.on_tile(str(SYNTH), "openearthmap", None)[0]
    state = label_tab.on_label_save(_strokes(state), state, "openearthmap", "a prompt")[0]
    out = _teach_until_done(state, steps=2, wait_s=600)
    state = out[0]
    assert "Taught both models" in out[1], out[1]
    rec = state.taught[teach.current_pair(state)]
    assert rec["steps"] == {"metasegnet": 2, "baseline": 2}
    for role in teach.ROLES:
        assert (Path(rec[role]) / "model.safetensors").is_file()
        assert MODELS.get(role, rec[role]).predictor is not None
