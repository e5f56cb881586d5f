"""Prompt experiments in the prompt store: schema v3 migration, counts, summaries, CLI, export."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from metaseg.metrics import compute_metrics
from prompts_db import PromptStore
from prompts_db import experiments as ex
from prompts_db.cli import main
from tests.prompts_db.test_prompts_db import upgraded_store

NAMES = ["a", "b", "c"]

# The v2 file format exactly as PromptStore wrote it before experiments existed.
V2_SQL = """
CREATE TABLE prompts (id INTEGER NOT NULL, zone VARCHAR(16) NOT NULL, class_set VARCHAR(64) NOT NULL,
    version INTEGER NOT NULL, text TEXT NOT NULL, source VARCHAR(128) NOT NULL, parent_id INTEGER,
    author VARCHAR(128), created_at VARCHAR(40) NOT NULL, token_count INTEGER NOT NULL, notes TEXT,
    PRIMARY KEY (id), CONSTRAINT uq_prompt_version UNIQUE (zone, class_set, version),
    FOREIGN KEY(parent_id) REFERENCES prompts (id));
CREATE INDEX ix_prompts_zone_class_set ON prompts (zone, class_set);
CREATE TABLE qa (id INTEGER NOT NULL, zone VARCHAR(16) NOT NULL, class_set VARCHAR(64) NOT NULL,
    class_name VARCHAR(64) NOT NULL, question TEXT NOT NULL, answer TEXT NOT NULL, model VARCHAR(128) NOT NULL,
    latency_s FLOAT, prompt_tokens INTEGER, completion_tokens INTEGER, total_tokens INTEGER,
    created_at VARCHAR(40) NOT NULL, PRIMARY KEY (id), CONSTRAINT uq_qa_model_question UNIQUE (model, question));
CREATE TABLE labels (id INTEGER NOT NULL, tile_hash VARCHAR(128) NOT NULL, class_set VARCHAR(64) NOT NULL,
    mask_path TEXT NOT NULL, created_at VARCHAR(40) NOT NULL, PRIMARY KEY (id));
CREATE INDEX ix_labels_tile_hash ON labels (tile_hash);
CREATE TABLE prompt_qa (prompt_id INTEGER NOT NULL, qa_id INTEGER NOT NULL, position INTEGER NOT NULL,
    PRIMARY KEY (prompt_id, qa_id), FOREIGN KEY(prompt_id) REFERENCES prompts (id),
    FOREIGN KEY(qa_id) REFERENCES qa (id));
CREATE TABLE runs (id INTEGER NOT NULL, tile_hash VARCHAR(128) NOT NULL, prompt_id INTEGER,
    model_name VARCHAR(128) NOT NULL, model_role VARCHAR(32) NOT NULL, checkpoint_hash VARCHAR(128),
    class_set VARCHAR(64), per_class_iou TEXT NOT NULL, miou FLOAT, oa FLOAT, created_at VARCHAR(40) NOT NULL,
    PRIMARY KEY (id), FOREIGN KEY(prompt_id) REFERENCES prompts (id));
CREATE INDEX ix_runs_tile_hash ON runs (tile_hash);
INSERT INTO prompts VALUES (1, 'Cfb', 'potsdam', 1, 'old v2 text', 'template', NULL, 'seed',
    '2026-01-01T00:00:00+00:00', 3, NULL);
INSERT INTO prompts VALUES (2, 'Cfb', 'potsdam', 2, 'my edit', 'user', 1, 'me', '2026-01-02T00:00:00+00:00', 2, NULL);
INSERT INTO runs VALUES (1, 'tileX', 2, 'metasegnet_demo', 'metasegnet', 'abc', 'potsdam', '{"car": 0.5}', 0.5,
    0.9, '2026-01-03T00:00:00+00:00');
INSERT INTO labels VALUES (1, 'tileX', 'potsdam', 'm.png', '2026-01-03T00:00:00+00:00');
PRAGMA user_version = 2;
"""


@pytest.fixture
def store(tmp_path):
    s = PromptStore(tmp_path / "p.sqlite", seed=False)
    yield s
    s.close()


def _cm(rng: np.random.Generator) -> list[list[int]]:
    return rng.integers(0, 50, size=(3, 3)).tolist()


def _experiment(store, n_tiles=3, variants=("climate", "none"), baseline=True, seed=0):
    rng = np.random.default_rng(seed)
    eid = ex.create(
        store, model_name="m", dataset="synthearth", split="test", root="/data", class_set="openearthmap",
        class_names=NAMES, scored=[0, 1, 2], variants=list(variants), n_tiles=n_tiles,
        baseline_name="b" if baseline else None, checkpoint_hash="abc",
    )  # fmt: skip
    tiles = [
        ex.TileRecord(
            position=i,
            tile=f"t{i}",
            image=f"/data/t{i}.tif",
            label=f"/data/l{i}.tif",
            zone="Cfb",
            seconds=0.1,
            baseline=_cm(rng) if baseline else None,
            variants={
                v: {"confusion": _cm(rng), "prompt_id": None, "prompt_text": f"{v} text"} for v in variants
            },
        )  # fmt: skip
        for i in range(n_tiles)
    ]
    return eid, tiles


def test_upgrade_from_v2_file_adds_experiment_tables_and_keeps_data(tmp_path):
    path = tmp_path / "v2.sqlite"
    s, tables, _ = upgraded_store(path, V2_SQL)
    assert {"experiments", "experiment_tiles", "experiment_results"} <= tables
    cur = s.current("Cfb", "potsdam")
    assert (cur.id, cur.text, cur.parent_id) == (2, "my edit", 1)
    assert s.runs("tileX")[0]["miou"] == 0.5 and s.labels("tileX")[0]["mask_path"] == "m.png"
    eid, tiles = _experiment(s)
    ex.record_tiles(s, eid, tiles)
    assert ex.finish(s, eid) == "complete"
    s.close()
    s2 = PromptStore(path)  # reopening does not upgrade again; the experiment is there
    assert [e["id"] for e in ex.list_experiments(s2)] == [eid]
    s2.close()


def test_summary_recomputes_evaluate_metrics_from_counts(store):
    eid, tiles = _experiment(store, n_tiles=4)
    assert ex.record_tiles(store, eid, tiles[:2]) == 2
    assert ex.record_tiles(store, eid, tiles[1:]) == 2  # t1 re-sent (lost worker): not counted twice
    assert ex.finish(store, eid, seconds=1.5, timings={"tile_mean_s": 0.1}) == "complete"
    exp = ex.get_experiment(store, eid)
    assert exp["status"] == "complete" and exp["tiles"] == 4 and exp["variants"] == ["climate", "none"]
    for v in ("climate", "none"):
        total = np.sum([t.variants[v]["confusion"] for t in tiles], axis=0)
        raw = compute_metrics(total, scored=[0, 1, 2], class_names=NAMES)
        assert exp["results"][v]["miou"] == round(100 * raw.miou, 2)
        assert exp["results"][v]["oa"] == round(100 * raw.oa, 2)
        assert exp["results"][v]["mf1"] == round(100 * raw.mf1, 2)
        assert exp["results"][v]["per_class"]["b"]["iou"] == round(100 * raw.iou[1], 2)
    total = np.sum([t.baseline for t in tiles], axis=0)
    assert exp["baseline_results"]["miou"] == round(100 * compute_metrics(total, scored=[0, 1, 2]).miou, 2)
    data = ex.load(store, eid)
    m = np.asarray(tiles[2].variants["none"]["confusion"])
    got = ex.per_tile_iou(data.variants["none"])[2]
    want = 100 * np.diag(m) / (m.sum(0) + m.sum(1) - np.diag(m))
    assert np.allclose(got, want)
    assert ex.prompt_text(store, data, "none", 0) == "none text"


def test_ranked_tiles_orders_by_delta(store):
    eid = ex.create(store, model_name="m", dataset="d", split="s", root="/r", class_set="x", class_names=NAMES,
                    scored=[0, 1, 2], variants=["climate", "wrong"], n_tiles=3)  # fmt: skip
    eye = np.eye(3, dtype=int) * 10
    bad = np.full((3, 3), 5)
    recs = []
    for i, (c, w) in enumerate([(eye, eye), (bad, eye), (eye, bad)]):
        recs.append(
            ex.TileRecord(
                i,
                f"t{i}",
                "img",
                "lab",
                None,
                0.0,
                None,
                {"climate": {"confusion": c.tolist()}, "wrong": {"confusion": w.tolist()}},
            )
        )
    ex.record_tiles(store, eid, recs)
    rows = ex.ranked_tiles(ex.load(store, eid), "climate", "wrong", "a")
    assert [r["tile"] for r in rows] == ["t1", "t0", "t2"]
    assert rows[0]["delta"] > 0 > rows[-1]["delta"] and rows[1]["delta"] == 0
    with pytest.raises(Exception, match="no baseline"):
        ex.ranked_tiles(ex.load(store, eid), "baseline", "wrong")


def test_interrupted_experiment_is_incomplete_and_partial(store):
    eid, tiles = _experiment(store, n_tiles=5)
    ex.record_tiles(store, eid, tiles[:2])
    assert ex.finish(store, eid, interrupted=True) == "incomplete"
    exp = ex.get_experiment(store, eid)
    assert (exp["status"], exp["tiles"], exp["n_tiles"]) == ("incomplete", 2, 5)
    eid2, tiles2 = _experiment(store, n_tiles=2)
    ex.record_tiles(store, eid2, tiles2)
    assert ex.finish(store, eid2, errors=[{"tile": "t9", "reason": "unreadable"}]) == "incomplete"


def test_bad_confusion_shape_rolls_back_the_batch(store):
    eid, tiles = _experiment(store, n_tiles=2)
    tiles[1].variants["climate"]["confusion"] = [[1, 2], [3, 4]]
    with pytest.raises(Exception, match="3x3"):
        ex.record_tiles(store, eid, tiles)
    assert ex.get_experiment(store, eid)["tiles"] == 0  # nothing half-written


def test_cli_experiments_and_experiment(capsys, tmp_path, monkeypatch):
    db = tmp_path / "cli.sqlite"
    s = PromptStore(db, seed=False)
    eid, tiles = _experiment(s)
    ex.record_tiles(s, eid, tiles)
    ex.finish(s, eid)
    s.close()
    assert main(["--db", str(db), "experiments", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["id"] == eid and {"id", "created", "model", "dataset", "variants"} <= set(rows[0])
    assert main(["--db", str(db), "experiments"]) == 0
    assert f"{eid}" in capsys.readouterr().out
    assert main(["--db", str(db), "experiment", str(eid), "--json"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert set(one["results"]) == {"climate", "none"} and one["baseline_results"]["miou"] is not None
    assert main(["--db", str(db), "experiment", str(eid)]) == 0
    assert "climate" in capsys.readouterr().out
    assert main(["--db", str(db), "experiment", str(eid), "--export", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 3 * 3 * 3  # tiles × (baseline + 2 variants) × classes
    assert {"intersection", "union", "iou", "prompt_id"} <= set(rows[0])
    out = tmp_path / "e.json"
    assert main(["--db", str(db), "experiment", str(eid), "--export", "json", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert len(doc["per_tile"]) == 3 and doc["per_tile"][0]["results"]["climate"]["confusion"]
    assert main(["--db", str(db), "experiment", "999", "--json"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no experiment with id 999" in err
