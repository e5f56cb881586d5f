"""Experiments tab handlers: start an experiment, leaderboard, chart, ranked gallery, open in Segment, export.

Handlers are called directly (as in test_app_handlers); the sweep runs on an in-process Dask
worker with the shipped demo weights over 2 SynthEarth tiles of 64². The browser flow is in
``test_app_browser_experiments.py`` (slow).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from training import synth


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("exp_tab")
    synth.write_synthearth(root, n=2, size=64, seed=5, zones="Cfa,BWh", split_fractions="0,0,1")
    return root


def test_start_show_rank_open_and_export(synth_root, tmp_path, monkeypatch):
    import gradio as gr

    from studio.session import SessionState
    from studio.tabs import experiments as tab

    monkeypatch.setenv("METASEG_DATA_ROOTS", str(synth_root))  # the operator offers this folder
    state = SessionState()
    versions, info = tab.on_scan(tab.FOLDER, "synthearth", str(synth_root), "test", state)
    assert "Cfa" in info and "BWh" in info
    ids = [v for _, v in versions["choices"]]
    assert ids and all(v.startswith("id:") for v in ids)
    cfa = next(v for label, v in versions["choices"] if " Cfa v1 " in label)

    seen = []
    progress = lambda *a, **k: seen.append(a)  # noqa: E731 - stands in for gr.Progress
    state, status, pick = tab.on_start(tab.FOLDER, "synthearth", str(synth_root), "test", ["climate", "none"],
                                       [cfa], None, state, progress=progress)  # fmt: skip
    eid = pick["value"]
    assert f"#{eid}" in status and "complete" in status and "2/2 tiles" in status
    assert (2, 2) in [a[0] for a in seen if a and isinstance(a[0], tuple)]  # progress reached done/total

    board, chart, cls, va, vb, head = tab.on_show(eid, state)
    assert set(board["variant"]) == {"baseline", "climate", "none", cfa}
    clim = board[board["variant"] == "climate"].iloc[0]
    assert clim["Δ mIoU vs climate"] == 0.0
    base = board[board["variant"] == "baseline"].iloc[0]
    assert clim["Δ mIoU vs baseline"] == pytest.approx(clim["mIoU"] - base["mIoU"], abs=0.011)
    assert isinstance(chart, np.ndarray) and chart.ndim == 3
    assert va["value"] == "climate" and vb["value"] != "climate" and "building" in cls["choices"]
    assert f"#{eid}" in head

    items, picks = tab.on_gallery(eid, tab.ALL_CLASSES, "climate", "none", state, progress=progress)
    assert len(items) == len(picks) == 2
    thumb, caption = items[0]
    assert thumb.shape[1] == 2 * 64 + 4 and "Δ" in caption
    assert picks[0]["prompt"] == "" and picks[0]["variant"] == "none"  # B's prompt (empty text)
    items, picks = tab.on_gallery(eid, "building", "none", "climate", state, progress=progress)
    from prompts_db import PromptStore

    zone = "Cfa" if "cfa" in Path(picks[0]["image"]).name else "BWh"
    assert picks[0]["prompt"] == PromptStore().current(zone, "openearthmap").text
    out = tab.on_pick(picks, state, SimpleNamespace(index=0))
    assert isinstance(out[-1], gr.Tabs)  # Segment is selected
    assert out[5] == picks[0]["prompt"]  # the prompt box is filled with that variant's text
    assert out[0].tile is not None and Path(out[0].tile_path).read_bytes() == Path(picks[0]["image"]).read_bytes()
    with pytest.raises(gr.Error, match="different variants"):
        tab.on_gallery(eid, tab.ALL_CLASSES, "none", "none", state, progress=progress)

    state, csv_path = tab.on_export(eid, "csv", state)
    assert Path(csv_path).read_text().startswith("experiment_id,tile,zone,variant")
    state, json_path = tab.on_export(eid, "json", state)
    assert len(json.loads(Path(json_path).read_text())["per_tile"]) == 2
    with pytest.raises(gr.Error):
        tab.on_export(None, "csv", state)


def test_labelled_tiles_become_an_evaluation_set(synth_root, tmp_path):
    from metaseg.errors import ConfigError
    from studio import experiments as svc
    from studio import labels, prompt_store

    with pytest.raises(ConfigError, match="no saved labels"):
        svc.labelled_set(tmp_path / "none")
    image = next((synth_root).glob("*/images/*.tif"))
    label = image.parent.parent / "labels" / image.name
    folder = labels.label_dir() / "abc"
    folder.mkdir(parents=True)
    mask = folder / "label_openearthmap_x.tif"
    mask.write_bytes(label.read_bytes())
    prompt_store.get_store().save_label("abc" * 20, "openearthmap", str(mask))
    svc.keep_labelled_tile(image, folder)
    root, cs, n = svc.labelled_set(tmp_path / "set")
    assert (cs, n) == ("openearthmap", 1)
    zones, cs2 = svc.zones_of("synthearth", str(root), "test")
    assert cs2 == "openearthmap" and len(zones) == 1
