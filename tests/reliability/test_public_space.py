"""A public Space that strangers cannot break (issue 21): two gradio_client sessions on loopback.

Each test reproduces one finding of the hostile review through the running app's API (every
event handler is callable, ``/on_load_checkpoints`` included) and checks that it now holds:
one session cannot change or see another's models; bad model choices are refused before they
are stored; error text is escaped and names no server path.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.fixtures.geotiffs import write_geotiff


def _msg(exc) -> str:
    return " ".join(str(getattr(exc, "message", None) or exc).split())


@pytest.fixture
def source_models(running_app):
    """Serve predictors that honour the *source* (demo names, checkpoint paths) instead of one fixed
    pair, so a session's choice is visible in what it runs. Records every load."""
    from metaseg.inference import Predictor
    from tests.fixtures.app_server import app_models

    loads: list[tuple[str, str]] = []

    def factory(role: str, source: str | None = None):
        loads.append((role, str(source)))
        if str(source).startswith("demo:"):
            return Predictor.from_name(str(source)[5:], "cpu", backend="torch")
        return Predictor.from_checkpoint(str(source), "cpu", backend="torch")

    with app_models(factory):
        yield loads


def _table(running_app, client) -> dict[str, str]:
    out = running_app.call(client, api_name="/models_table", timeout=60)
    return {row[0]: row[1] for row in out["data"]}


def _segment(running_app, client, path) -> dict:
    from gradio_client import handle_file

    _a, _b, fractions = running_app.call(client, handle_file(str(path)), "fields and a river",
                                         api_name="/segment", timeout=120)
    return fractions


def test_models_are_per_session(running_app, source_models, random_checkpoints, tmp_path, monkeypatch, report):
    """Session A picks an allowed checkpoint; session B's models, table and results are unchanged."""
    import shutil

    ckpt = random_checkpoints["metasegnet_demo"]
    stem = tmp_path / "ops" / "field_model"
    stem.parent.mkdir()
    for suffix in (".safetensors", ".json"):
        shutil.copyfile(ckpt.with_suffix(suffix), stem.with_suffix(suffix))
    monkeypatch.setenv("METASEG_ALLOWED_CHECKPOINTS", str(stem))
    tile = write_geotiff(tmp_path / "t.tif", 52.39, 13.06, crs="EPSG:32633", size=64)
    a, b = running_app.client(), running_app.client()
    before = _segment(running_app, b, tile)
    out = running_app.call(a, stem.name, "baseline_demo", api_name="/on_load_checkpoints", timeout=120)
    rows = {r[0]: r[1] for r in out["data"]}
    assert rows["metasegnet"] == stem.name, rows  # shown by name only: no server path
    assert str(tmp_path.parent) not in str(out)
    assert _table(running_app, b)["metasegnet"] == "demo:metasegnet_demo"
    assert _table(running_app, a)["metasegnet"] == stem.name
    assert _segment(running_app, b, tile) == before
    assert ("metasegnet", str(stem)) in source_models
    report.section("Public Space: per-session models", [
        "Two gradio_client sessions: A loads an operator-allowed checkpoint (`METASEG_ALLOWED_CHECKPOINTS`) in the",
        "Models tab (`/on_load_checkpoints`); B's Models table still shows `demo:metasegnet_demo` and B's `/segment`",
        "result is identical before and after. A's table names the checkpoint by its last path part only.",
    ])


BAD_CHOICES = [
    ("../../../../etc/shadow.safetensors", "a path outside the checkpoint roots"),
    ("/etc/passwd", "a server file"),
    ("someone/huge-repo", "a hub id not on the allowlist"),
]


def test_bad_model_choices_are_refused_before_they_are_stored(running_app, source_models, tmp_path, monkeypatch,
                                                             report):
    import huggingface_hub

    downloads = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: downloads.append(a) or 1 / 0)
    monkeypatch.delenv("METASEG_ALLOWED_CHECKPOINTS", raising=False)
    tile = write_geotiff(tmp_path / "t.tif", 52.39, 13.06, crs="EPSG:32633", size=64)
    a, b = running_app.client(), running_app.client()
    before = _segment(running_app, b, tile)
    rows = []
    for text, what in BAD_CHOICES:
        with pytest.raises(Exception) as err:  # noqa: PT011 - gradio_client's AppError
            running_app.call(a, text, "", api_name="/on_load_checkpoints", timeout=60)
        msg = _msg(err.value)
        assert "not a checkpoint this server offers" in msg, msg
        assert "root:" not in msg and "/work" not in msg and "/tmp" not in msg
        rows.append(f"| {what} (`{text}`) | refused: {msg[:90]}… |")
    with pytest.raises(Exception) as err:  # noqa: PT011
        running_app.call(a, "baseline_demo", "", api_name="/on_load_checkpoints", timeout=120)
    assert "vision-only" in _msg(err.value) and "MetaSegNet slot" in _msg(err.value)
    rows.append(f"| the baseline's weights in the MetaSegNet slot | refused: {_msg(err.value)[:90]}… |")
    assert downloads == []  # nothing was fetched from the hub
    assert _table(running_app, a)["metasegnet"] == "demo:metasegnet_demo"  # A's own models unchanged too
    assert _segment(running_app, b, tile) == before
    report.section("Public Space: bad model choices", [
        "Session A types hostile values in the Models tab; each is refused before anything is stored, nothing is",
        "downloaded (a stand-in `hf_hub_download` records calls: 0), and B's `/segment` answers as before.",
        "",
        "| choice | outcome |",
        "|---|---|",
        *rows,
    ])


def test_visitors_cannot_switch_models_when_the_operator_says_so(running_app, source_models, monkeypatch):
    monkeypatch.setenv("METASEG_VISITOR_MODELS", "0")
    with pytest.raises(Exception) as err:  # noqa: PT011
        running_app.call(running_app.client(), "metasegnet_demo", "", api_name="/on_load_checkpoints", timeout=60)
    assert "operator chooses the models" in _msg(err.value)


MARKUP = ('<a href="http://evil.example/x">click here</a><img src=x onerror=alert(1)>'
          '<form action="http://evil.example"><input type=password name=pw></form>')


def test_error_text_is_escaped(running_app, source_models, report):
    """The markup a hostile visitor types never reaches a pop-up as HTML (escaped, one line)."""
    client = running_app.client()
    with pytest.raises(Exception) as err:  # noqa: PT011
        running_app.call(client, MARKUP, "", api_name="/on_load_checkpoints", timeout=60)
    msg = _msg(err.value)
    assert "<a" not in msg and "<img" not in msg and "<form" not in msg and "<input" not in msg, msg
    assert "&lt;a" in msg
    report.section("Public Space: escaped error text", [
        "A checkpoint string holding a link, an image with `onerror` and a password form comes back in the error",
        f"pop-up as text: `{msg[:100].replace('|', '/')}…`.",
    ])


# --------------------------------------------------------------------------- policy (no server)
def test_clean_message_hides_paths_and_addresses():
    from studio.tabs.common import clean_message

    assert clean_message("checkpoint file not found: /srv/secret/models/x.safetensors (need both)") == \
        "checkpoint file not found: x.safetensors (need both)"
    assert "127.0.0.1" not in clean_message("LLM error at http://127.0.0.1:9/v1/chat: refused")
    assert clean_message("0.5 m/px, 3/4 of the tile") == "0.5 m/px, 3/4 of the tile"
    assert clean_message("<b>x</b> & y") == "&lt;b&gt;x&lt;/b&gt; &amp; y"


def test_paths_are_confined_to_the_roots_symlinks_included(tmp_path, monkeypatch):
    from metaseg.errors import ConfigError
    from studio import policy

    root, outside = tmp_path / "data", tmp_path / "private"
    (root / "synth_test").mkdir(parents=True)
    outside.mkdir()
    (root / "escape").symlink_to(outside, target_is_directory=True)
    monkeypatch.setenv("METASEG_DATA_ROOTS", str(root))
    assert policy.data_folder("synth_test") == (root / "synth_test").resolve()
    assert policy.data_folder(str(root / "synth_test")) == (root / "synth_test").resolve()
    messages = set()
    for text in (str(outside), "escape", "../private", "nonexistent", "/etc", "synth_test/../../private"):
        with pytest.raises(ConfigError) as err:
            policy.data_folder(text)
        messages.add(str(err.value).replace(repr(policy._shown(text)), "X"))
    assert len(messages) == 1  # one message whatever exists outside the roots
    assert str(tmp_path) not in messages.pop().replace("X", "")
    monkeypatch.delenv("METASEG_DATA_ROOTS")
    with pytest.raises(ConfigError, match="offers no dataset folders"):
        policy.data_folder("synth_test")


def test_model_choice_policy(tmp_path, monkeypatch):
    from metaseg.errors import CheckpointError
    from studio import policy

    monkeypatch.setenv("METASEG_ALLOWED_CHECKPOINTS", f"org/good, trusted/*, {tmp_path / 'ops' / 'model'}")
    own = tmp_path / "session"
    (own / "taught").mkdir(parents=True)
    assert policy.model_choice("metasegnet", "") is None
    assert policy.model_choice("metasegnet", "metasegnet_demo") == "demo:metasegnet_demo"
    assert policy.model_choice("baseline", "org/good") == "org/good"
    assert policy.model_choice("baseline", "trusted/any") == "trusted/any"
    assert policy.model_choice("baseline", "model") == str(tmp_path / "ops" / "model")
    assert policy.model_choice("metasegnet", str(own / "taught"), [own]) == str((own / "taught").resolve())
    for bad in ("org/other", "evil/good", str(tmp_path / "ops" / "model"), str(own / "taught"), "../../etc/x"):
        with pytest.raises(CheckpointError, match="not a checkpoint this server offers"):
            policy.model_choice("metasegnet", bad)


def test_model_cache_is_shared_but_bounded(monkeypatch):
    """Loading is shared (one predictor per source), the LRU keeps the defaults and a few others."""
    from metaseg.errors import CheckpointError
    from studio import services

    class P:
        def __init__(self, role, source):
            self.uses_text = role == "metasegnet" and "vision" not in source
            self.class_set, self.meta = None, {}
            self.source = source

    cache = services.ModelCache()
    cache.set_factory(P)
    monkeypatch.setenv("METASEG_MODEL_CACHE", "2")
    default = cache.get("metasegnet")
    first = cache.get("metasegnet", "org/a")
    assert cache.get("metasegnet", "org/a") is first
    for name in ("org/b", "org/c", "org/d"):
        cache.get("metasegnet", name)
    assert cache.loaded("metasegnet", "org/a") is None  # evicted
    assert cache.get("metasegnet") is default  # the operator default stays
    with pytest.raises(CheckpointError, match="vision-only"):
        cache.get("metasegnet", "org/vision")  # checked before it is cached
    assert cache.loaded("metasegnet", "org/vision") is None


# --------------------------------------------------------------------------- server folders, labels, experiments
def test_server_folders_only_under_the_data_roots(running_app, tmp_path, monkeypatch, report):
    """The Experiments tab's "dataset folder on the server" reads only under METASEG_DATA_ROOTS, and
    its messages do not tell which folders exist elsewhere."""
    from training import synth

    root = tmp_path / "data"
    synth.write_synthearth(root / "synth", n=1, size=32, seed=3, zones="Cfb", split_fractions="0,0,1")
    private = tmp_path / "private"
    synth.write_synthearth(private, n=1, size=32, seed=4, zones="BWh", split_fractions="0,0,1")
    (root / "link").symlink_to(private, target_is_directory=True)
    monkeypatch.setenv("METASEG_DATA_ROOTS", str(root))
    client = running_app.client()
    folder = "dataset folder on the server"
    _versions, info = running_app.call(client, folder, "synthearth", "synth", "test", api_name="/on_scan", timeout=120)
    assert "Cfb" in info
    rows, messages = [], set()
    for text in (str(private), "link", "../private", "/etc", "/nonexistent", str(tmp_path / "nope")):
        with pytest.raises(Exception) as err:  # noqa: PT011
            running_app.call(client, folder, "synthearth", text, "test", api_name="/on_scan", timeout=60)
        msg = _msg(err.value)
        assert "BWh" not in msg and str(tmp_path) not in msg, msg
        messages.add(msg.split("'")[0] + msg.split("'")[-1])
        rows.append(f"| `{text.replace(str(tmp_path), '<tmp>')}` | {msg.split(' in the data')[0][:70]}… |")
        with pytest.raises(Exception):  # noqa: PT011, B017 - starting one is refused the same way
            running_app.call(client, folder, "synthearth", text, "test", ["climate"], [], 0,
                             api_name="/on_start", timeout=60)
    assert len(messages) == 1, messages  # the same words whether the folder exists or not
    report.section("Public Space: server folders", [
        "`METASEG_DATA_ROOTS` = one temporary `data/` folder; `/on_scan` (and `/on_start`) with other folders, a",
        "symlink out of the root and `..`: every one refused with the same message (the folder's existence is not",
        "revealed), nothing read.",
        "",
        "| typed folder | message |",
        "|---|---|",
        *rows,
    ])


def test_labels_and_experiments_stay_in_their_session(tmp_path, monkeypatch, report):
    """Session A labels a tile and runs an experiment on its labelled tiles; session B sees neither
    (its labelled set is empty, A's experiment is not in its list and cannot be opened by id)."""
    import gradio as gr

    from studio.session import SessionState
    from studio.tabs import experiments as exp_tab
    from studio.tabs import label as label_tab
    from studio.tabs import locate
    from tests.fixtures.app_server import app_models
    from tests.test_app_handlers import fake_factory

    monkeypatch.delenv("METASEG_SHARE_LABELS", raising=False)
    monkeypatch.delenv("METASEG_SHARE_EXPERIMENTS", raising=False)
    tile = write_geotiff(tmp_path / "t.tif", 52.39, 13.06, crs="EPSG:32633", size=32)
    with app_models(fake_factory):
        a, b = SessionState(), SessionState()
        for s in (a, b):
            locate.load_tile(tile, "openearthmap", s)
        from metaseg.classes import get_class_set
        from metaseg.visualize import colorize

        painted = colorize(np.zeros((32, 32), np.uint8), get_class_set("openearthmap"))
        label_tab.on_label_save({"composite": painted}, a)
        assert len(label_tab.labels_table(a)) == 1 and len(label_tab.labels_table(b)) == 0
        with pytest.raises(gr.Error, match="no saved labels"):
            exp_tab.on_scan(exp_tab.svc.LABELLED, "synthearth", "", "test", b)
        _versions, info = exp_tab.on_scan(exp_tab.svc.LABELLED, "synthearth", "", "test", a)
        assert "no zone" in info or "Cfb" in info
        monkeypatch.setattr(exp_tab.svc, "start", lambda **kw: {"experiment_id": 99991, "status": "complete",
                                                                 "tiles": 1, "n_tiles": 1, "seconds": 0.1,
                                                                 "errors": []})
        a = exp_tab.on_start(exp_tab.svc.LABELLED, "synthearth", "", "test", ["climate"], [], 0, a,
                             progress=lambda *x, **k: None)[0]
        assert a.experiment_ids == [99991]
        with pytest.raises(gr.Error, match="No experiment #99991 in this session"):
            exp_tab.on_show(99991, b)
        with pytest.raises(gr.Error, match="No experiment #99991 in this session"):
            exp_tab.on_export(99991, "csv", b)
        ids_b = [c[1] for c in exp_tab.on_refresh(None, b)["choices"]]
        assert ids_b == []
    report.section("Public Space: labels and experiments per session", [
        "Two sessions load the same tile; A saves a painted label and starts an experiment on \"labelled tiles in",
        "the store\". B's label table is empty, B's labelled set is refused (\"no saved labels\"), A's experiment is",
        "not in B's list and `/on_show` / `/on_export` of its id answer \"No experiment #… in this session\".",
        "`METASEG_SHARE_LABELS=1` / `METASEG_SHARE_EXPERIMENTS=1` share them (the operator's choice).",
    ])
