"""``python -m training.sweep``: variant resolution, exit codes, evaluate parity, Ctrl-C.

Fast tests run the sweep on an in-process Dask worker (``workers=0``) over 3 SynthEarth tiles of
64²; real multi-process clusters (1 vs 2 workers, a killed worker, a separately started
``dask scheduler``/``dask worker``) are in ``tests/training/test_sweep_cluster.py`` (slow).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from metaseg.errors import ConfigError
from prompts_db import PromptNotFoundError, PromptStore
from prompts_db import experiments as ex
from training import synth
from training.datasets import build_dataset
from training.sweep import main, parse_variant, resolve_variants, run_sweep


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sweep_synth")
    synth.write_synthearth(root, n=3, size=64, seed=9, zones="Cfa,BWh", split_fractions="0,0,1")
    return root


@pytest.fixture
def store(tmp_path):
    s = PromptStore(tmp_path / "sweep.sqlite")
    yield s
    s.close()


def _run(capsys, argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse errors
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_parse_variant():
    assert parse_variant("Climate") == "climate"
    assert parse_variant("source:LLM") == "source:llm"
    assert parse_variant("id:007") == "id:7"
    for bad in ("climat", "source:bot", "id:x", "id:", ""):
        with pytest.raises(ConfigError, match="unknown variant"):
            parse_variant(bad)


def test_variants_resolve_like_evaluate_and_the_store(synth_root, store):
    cfa_user = store.save("Cfa", "openearthmap", "my Cfa edit", source="user")
    other = store.save("Cfb", "loveda", "another class set", source="user")
    variants = ["climate", "generic", "store-generic", "none", "wrong", "source:user", "source:llm",
                f"id:{cfa_user.id}"]  # fmt: skip
    plan = resolve_variants("synthearth", synth_root, "test", variants, store)
    zones = plan.zones
    assert set(zones) == {"Cfa", "BWh"}
    from training.evaluate import PROMPT_MODES

    for mode in PROMPT_MODES:  # the reader behind training.evaluate
        assert (
            plan.texts[mode]
            == build_dataset("synthearth", synth_root, "test", prompt_mode=mode, store=store).prompts
        )
    for z, text, pid in zip(zones, plan.texts["source:user"], plan.prompt_ids["source:user"], strict=True):
        want = cfa_user if z == "Cfa" else store.current(z, "openearthmap")  # no user version: current
        assert (text, pid) == (want.text, want.id)
    assert plan.texts["source:llm"] == plan.texts["climate"]  # no LLM versions at all: current prompts
    for z, text, pid in zip(
        zones, plan.texts[f"id:{cfa_user.id}"], plan.prompt_ids[f"id:{cfa_user.id}"], strict=True
    ):
        assert (text == "my Cfa edit") == (z == "Cfa") and (pid == cfa_user.id) == (z == "Cfa")
    assert plan.prompt_ids["none"] == [store.current("none", "openearthmap").id] * 3
    generic = store.current(None, "openearthmap")
    assert plan.prompt_ids["store-generic"] == [generic.id] * 3 and plan.texts["store-generic"] == [generic.text] * 3
    assert plan.prompt_ids["generic"] == [None] * 3  # the paper's sentence is no stored version
    with pytest.raises(ConfigError, match="loveda classes"):
        resolve_variants("synthearth", synth_root, "test", [f"id:{other.id}"], store)
    with pytest.raises(PromptNotFoundError):
        resolve_variants("synthearth", synth_root, "test", ["id:999999"], store)


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--variant", "bogus"], "unknown variant 'bogus'"),
        (["--variant", "id:999999"], "no prompt with id 999999"),
        (["--variant", "climate", "--root", "EMPTY"], "is empty"),
        (["--variant", "climate", "--root", "/nonexistent/x"], "is not a folder"),
        (["--variant", "climate", "--model", "nope_demo"], "unknown model"),
    ],
)
def test_user_errors_exit_2_one_line(capsys, synth_root, tmp_path, extra, needle):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "test.txt").write_text("")
    argv = {
        "--model": "metasegnet_demo",
        "--dataset": "synthearth",
        "--root": str(synth_root),
        "--split": "test",
    }
    rest = []
    for i in range(0, len(extra), 2):
        if extra[i] in argv:
            argv[extra[i]] = str(empty) if extra[i + 1] == "EMPTY" else extra[i + 1]
        else:
            rest += extra[i : i + 2]
    args = [x for kv in argv.items() for x in kv] + rest + ["--workers", "0", "--no-progress"]
    code, out, err = _run(capsys, args)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err


def test_workers_and_scheduler_exclude_each_other(capsys, synth_root):
    code, _, err = _run(capsys, ["--model", "metasegnet_demo", "--dataset", "synthearth", "--root", synth_root,
                                 "--split", "test", "--variant", "climate", "--workers", "2", "--scheduler",
                                 "tcp://127.0.0.1:1"])  # fmt: skip
    assert code == 2 and err.count("\n") == 1


def test_sweep_climate_equals_evaluate_and_is_stored(capsys, synth_root, tmp_path, monkeypatch):
    """`climate` of the sweep is `training.evaluate --prompt-mode climate`, to the last digit."""
    from training.evaluate import main as evaluate_main

    db = tmp_path / "e.sqlite"
    monkeypatch.setenv("METASEG_DB", str(db))
    code, out, err = _run(capsys, ["--model", "metasegnet_demo", "--dataset", "synthearth", "--root", synth_root,
                                   "--split", "test", "--variant", "climate", "--variant", "none", "--variant",
                                   "climate", "--workers", "0", "--json"])  # fmt: skip
    assert code == 0, err
    rep = json.loads(out)
    assert {"experiment_id", "tiles", "variants"} <= set(rep) and "baseline" not in rep
    assert rep["tiles"] == 3 and list(rep["variants"]) == ["climate", "none"] and rep["status"] == "complete"
    for v in ("climate", "none"):
        assert {"miou", "oa", "mf1", "per_class"} <= set(rep["variants"][v])
    assert "sweep" in err and "3/3" in err  # the progress bar (done/total)
    # the sweep scores the store's prompts; evaluate defaults to the checkpoint's training prompts
    assert evaluate_main(["--model", "metasegnet_demo", "--dataset", "synthearth", "--root", str(synth_root),
                          "--split", "test", "--prompt-mode", "climate", "--device", "cpu", "--json",
                          "--no-progress", "--prompt-source", "store"]) == 0  # fmt: skip
    ev = json.loads(capsys.readouterr().out)
    got = rep["variants"]["climate"]
    assert (got["miou"], got["oa"], got["mf1"], got["precision"]) == (
        ev["miou"],
        ev["oa"],
        ev["mf1"],
        ev["precision"],
    )
    assert got["per_class"] == ev["per_class"]
    # stored: listed by the prompts_db CLI, counts per tile × variant, prompt ids per tile
    from prompts_db.cli import main as db_main

    assert db_main(["experiments", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed[0]["id"] == rep["experiment_id"] and listed[0]["variants"] == ["climate", "none"]
    with PromptStore(db) as s:
        data = ex.load(s, rep["experiment_id"])
        plan = resolve_variants("synthearth", synth_root, "test", ["climate"], s)
    assert [t["tile"] for t in data.tiles] == [smp.id for smp in plan.dataset.samples]
    assert [p for p, _ in data.prompts["climate"]] == plan.prompt_ids["climate"]
    assert data.variants["none"].sum() == data.variants["climate"].sum() == 3 * 64 * 64
    assert data.baseline is None


def test_ctrl_c_stores_an_incomplete_experiment(synth_root, store):
    from metaseg.runner import Runner

    def interrupt(done, total):  # Ctrl-C right after the second tile arrived: both finished tiles are kept
        if done == 2:
            raise KeyboardInterrupt

    with Runner(workers=0, progress=False, on_progress=interrupt) as runner:
        with pytest.raises(KeyboardInterrupt) as info:
            run_sweep(model="metasegnet_demo", checkpoint=None, dataset="synthearth", root=str(synth_root),
                      split="test", variants=["climate", "none"], store=store, runner=runner, threads=None)  # fmt: skip
    eid = info.value.experiment_id
    exp = ex.get_experiment(store, eid)
    assert (exp["status"], exp["tiles"], exp["n_tiles"]) == ("incomplete", 2, 3)
    data = ex.load(store, eid)
    assert data.variants["climate"].sum() == 2 * 64 * 64  # two whole tiles, nothing half-written
    assert np.isfinite(exp["results"]["climate"]["miou"])


def test_group_diagnostics_count_correct_pixels_per_group(synth_root):
    from metaseg.runner import ModelSpec
    from training.sweep import read_tile, sweep_tile
    from training.synth.diagnostics import ambiguous_materials

    image = sorted(synth_root.glob("*/images/*.tif"))[0]
    label = image.parent.parent / "labels" / image.name
    groups = ambiguous_materials(str(image))
    assert groups.shape == (64, 64) and set(np.unique(groups)) <= {0, 1, 2, 3}
    assert ambiguous_materials(str(synth_root / "nowhere" / "images" / "x.tif")) is None
    out = sweep_tile({"image": str(image), "label": str(label), "texts": ["", "a tile"]},
                     ModelSpec(name="metasegnet_demo"), None, "openearthmap",
                     groups="training.synth.diagnostics:ambiguous_materials")  # fmt: skip
    g = out["groups"]
    assert len(g["hits"]) == 2 and g["baseline"] is None and sum(g["totals"]) == 64 * 64
    _, lab = read_tile(str(image), str(label), "openearthmap")
    assert sum(g["totals"]) == int((lab != 255).sum())
    for cm, hits in zip(out["texts"], g["hits"], strict=True):
        assert sum(hits) == int(np.trace(np.asarray(cm)))  # correct pixels, split by group
        assert all(h <= t for h, t in zip(hits, g["totals"], strict=True))


def test_auto_backend_is_stored_as_what_ran(capsys, synth_root, tmp_path, monkeypatch):
    """`--backend auto` resolves on the workers (ONNX Runtime on CPU); the experiment records that."""
    db = tmp_path / "b.sqlite"
    monkeypatch.setenv("METASEG_DB", str(db))
    code, out, err = _run(capsys, ["--model", "metasegnet_demo", "--baseline", "baseline_demo", "--dataset",
                                   "synthearth", "--root", synth_root, "--split", "test", "--variant", "climate",
                                   "--backend", "auto", "--workers", "0", "--json", "--no-progress"])  # fmt: skip
    assert code == 0, err
    rep = json.loads(out)
    assert rep["backend"] == "onnx"
    with PromptStore(db) as s:
        assert ex.get_experiment(s, rep["experiment_id"])["backend"] == "onnx"
