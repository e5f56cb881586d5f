"""Prompt store: schema, seeding, versions, validation, runs/labels, concurrency, migration."""

from __future__ import annotations

import json
import multiprocessing as mp
import sqlite3
import subprocess
import sys
import time
from itertools import combinations
from pathlib import Path

import pytest

from metaseg.errors import MetasegError, UnknownNameError
from prompts_db import (
    GENERIC,
    MAX_TEXT_CHARS,
    NO_TEXT,
    SCHEMA_VERSION,
    TOKEN_BUDGET,
    ZONE_CODES,
    PromptNotFoundError,
    PromptStore,
    PromptTextError,
    count_tokens,
    html_escape,
)
from prompts_db.knowledge import CLASS_SET_NAMES, knowledge_prompt, zone_facets
from prompts_db.tokens import _tokenizer, trim_to_budget

REPO = Path(__file__).resolve().parents[2]
KEYS = {"id", "zone", "class_set", "text", "source", "parent_id", "token_count", "created_at"}


@pytest.fixture
def store(tmp_path):
    s = PromptStore(tmp_path / "p.sqlite")
    yield s
    s.close()


def test_default_path_from_env_and_created_on_first_use(tmp_path):
    s = PromptStore()
    assert s.path == tmp_path / "metaseg.sqlite" and s.path.exists()
    mode = sqlite3.connect(s.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    s.close()


def test_seeded_all_zones_class_sets_generic_and_no_text(store):
    latest = store.list(latest_only=True)
    assert len(latest) == 3 * (30 + 2)
    assert len(ZONE_CODES) == 30
    for cs in CLASS_SET_NAMES:
        for zone in ZONE_CODES:
            rec = store.current(zone, cs)
            assert (rec.zone, rec.class_set, rec.source, rec.version) == (zone, cs, "template", 1)
            assert rec.text and rec.token_count == count_tokens(rec.text)
        generic = store.current(None, cs)
        assert generic.zone == GENERIC and "remote sensing image" in generic.text.lower()
        assert "climate" not in generic.text.lower()
        none = store.current(NO_TEXT, cs)
        assert none.zone == "none" and none.text == "" and none.token_count == 0 and none.is_no_text
    # seeding is idempotent
    assert store.seed() == 0
    assert len(store.list()) == 96


def test_seed_prompts_within_budget_and_not_unknown_tokens():
    tok = _tokenizer()
    assert tok is not None, "MiniLM tokenizer.json must be found"
    for cs in CLASS_SET_NAMES:
        for zone in ZONE_CODES:
            text = knowledge_prompt(zone, cs)
            n = count_tokens(text)
            assert 60 < n <= TOKEN_BUDGET, (zone, cs, n)
    enc = tok.encode("Evergreen rainforest canopy beside rivers")
    assert "[UNK]" not in enc.tokens and enc.tokens[0] == "[CLS]"


def test_zone_prompts_are_distinct_and_climate_specific():
    for cs in CLASS_SET_NAMES:
        texts = {z: knowledge_prompt(z, cs) for z in ZONE_CODES}
        for a, b in combinations(ZONE_CODES, 2):
            assert texts[a] != texts[b], (a, b, cs)
            # not just the code swapped: the body without the intro sentence differs too
            assert texts[a].split(". ", 1)[1] != texts[b].split(". ", 1)[1], (a, b, cs)
    cfa, bwh = zone_facets("Cfa"), zone_facets("BWh")
    assert cfa["tree"] != bwh["tree"] and cfa["agri"] != bwh["agri"]
    t_cfa, t_bwh = knowledge_prompt("Cfa", "openearthmap"), knowledge_prompt("BWh", "openearthmap")
    assert "bamboo" in t_cfa and "bamboo" not in t_bwh
    assert "date palms" in t_bwh and "date palms" not in t_cfa
    assert "Snow" in knowledge_prompt("Dfc", "potsdam") and "Snow" not in knowledge_prompt("Af", "potsdam")


def test_save_history_restore_lineage(store):
    base = store.current("Cfa", "loveda")
    e1 = store.save("cfa", "loveda", "first edit", parent_id=base.id, author="ana", notes="n1")
    e2 = store.save("Cfa", "loveda", "second edit", parent_id=e1.id)
    assert (e1.version, e2.version) == (2, 3) and e2.parent_id == e1.id and e1.source == "user"
    assert store.current("Cfa", "loveda").id == e2.id
    d = e2.to_dict()
    assert set(d) == KEYS and d["created_at"].endswith("+00:00")
    assert json.loads(json.dumps(d)) == d
    r = store.restore(base.id)
    assert r.text == base.text and r.parent_id == base.id and r.version == 4 and r.source == "template"
    hist = store.history(e1.id)
    assert [h.id for h in hist] == [r.id, e2.id, e1.id, base.id]  # newest first, whole line
    assert store.get(e1.id).author == "ana" and store.get(e1.id).notes == "n1"
    # other pairs untouched
    assert store.current("Cfa", "potsdam").version == 1


def test_text_is_stored_verbatim_and_validated(store):
    nasty = "  Robert'); DROP TABLE prompts;--\n<b>x</b> \u00e9\u6f22 \t "
    rec = store.save("Af", "potsdam", nasty)
    assert store.get(rec.id).text == nasty
    assert len(store.list()) == 97  # table still there
    assert html_escape(nasty).count("&lt;b&gt;") == 1 and "<b>" not in rec.to_html()
    with pytest.raises(PromptTextError):
        store.save("Af", "potsdam", "   \n")
    with pytest.raises(PromptTextError) as err:
        store.save("Af", "potsdam", "x" * (MAX_TEXT_CHARS + 1))
    assert isinstance(err.value, MetasegError) and "20000" in str(err.value)
    store.save("Af", "potsdam", "y" * MAX_TEXT_CHARS)  # exactly at the limit is fine
    with pytest.raises(PromptTextError):
        store.save("none", "potsdam", "text for the no-text choice")
    with pytest.raises(PromptTextError):
        store.save("Af", "potsdam", "ok", source="chatgpt")


def test_unknown_names_and_ids(store):
    with pytest.raises(UnknownNameError):
        store.current("Xx", "loveda")
    with pytest.raises(UnknownNameError):
        store.current("Cfa", "cityscapes")
    with pytest.raises(PromptNotFoundError):
        store.get(10_000)
    other = store.current("BWh", "loveda")
    with pytest.raises(PromptNotFoundError):  # parent from another (zone, class set)
        store.save("Cfa", "loveda", "text", parent_id=other.id)


def test_generate_offline_creates_template_version(store):
    before = store.current("ET", "openearthmap")
    rec = store.generate("ET", "openearthmap")
    assert rec.source == "template" and rec.parent_id == before.id and rec.version == 2
    assert "tundra" in rec.text.lower()


def test_runs_labels_and_prompt_version_comparison(store):
    p1 = store.current("Cfb", "potsdam")
    p2 = store.save("Cfb", "potsdam", "edited prompt", parent_id=p1.id)
    base = store.log_run("tileA", "baseline_demo", {"tree": 0.5, "car": 0.4}, model_role="baseline", oa=0.8)
    store.log_run(
        "tileA", "metasegnet_demo", {"tree": 0.6, "car": float("nan")}, prompt_id=p1.id, checkpoint_hash="c1"
    )
    store.log_run("tileA", "metasegnet_demo", {"tree": 0.7, "car": 0.5}, prompt_id=p2.id, miou=0.6, oa=0.9)
    store.log_run("tileB", "metasegnet_demo", {"tree": 0.1}, prompt_id=p1.id)
    assert base["miou"] == pytest.approx(0.45)
    runs = store.runs("tileA")
    assert len(runs) == 3 and len(store.runs()) == 4
    assert runs[1]["per_class_iou"] == {"tree": 0.6, "car": None}
    rows = store.compare_prompt_versions("tileA")
    assert [r["prompt_version"] for r in rows] == [2, 1, None]
    assert rows[0]["delta_miou"] == pytest.approx(0.15) and rows[0]["delta_iou"]["tree"] == pytest.approx(0.2)
    assert rows[1]["delta_iou"]["car"] is None and rows[2]["model_role"] == "baseline"
    with pytest.raises(MetasegError):
        store.log_run("tileA", "m", {}, model_role="teacher")
    with pytest.raises(PromptNotFoundError):
        store.log_run("tileA", "m", {}, prompt_id=99_999)
    lab = store.save_label("tileA", "potsdam", "/data/labels/a.tif")
    store.save_label("tileB", "loveda", "b.png")
    assert store.labels("tileA") == [lab] and len(store.labels()) == 2
    assert store.labels(class_set="loveda")[0]["mask_path"] == "b.png"


def test_prompt_for_location_uses_climate_lookup(store):
    rec = store.prompt_for_location(52.39, 13.06, "potsdam")  # Potsdam, Cfb
    assert rec.zone == "Cfb"
    ocean = store.prompt_for_location(0.0, -30.0, "potsdam")
    assert ocean.zone == GENERIC


def test_trim_to_budget_cuts_at_boundaries():
    text = " ".join(f"Sentence number {i} talks about green fields." for i in range(80))
    out, cut = trim_to_budget(text, 60)
    assert cut and count_tokens(out) <= 60 and out.endswith(".") and out in text
    words = "word " * 400
    out, cut = trim_to_budget(words, 30)
    assert cut and count_tokens(out) <= 30 and "wor " not in out + " "
    assert trim_to_budget("short.", 30) == ("short.", False)


def test_file_opens_in_sqlite_utils_cli(store):
    exe = Path(sys.executable).parent / "sqlite-utils"  # a pinned requirement: installed with the venv
    assert exe.is_file(), f"{exe} missing: pip install -r requirements.txt"
    out = subprocess.run(
        [str(exe), "tables", str(store.path), "--counts"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    counts = {t["table"]: t["count"] for t in json.loads(out.stdout)}
    assert {"prompts", "qa", "prompt_qa", "runs", "labels"} <= set(counts)
    assert counts["prompts"] == 96 and counts["runs"] == 0


def test_export_csv_and_json(store):
    data = json.loads(store.export("json"))
    assert len(data) == 96 and data[0]["id"] == 1
    csv_text = store.export("csv")
    assert csv_text.splitlines()[0].startswith("id,zone,class_set,version,text")
    with pytest.raises(MetasegError):
        store.export("xml")


def test_import_is_torch_free():
    code = (
        "import sys, prompts_db, prompts_db.cli, prompts_db.llm, prompts_db.experiments; "
        "s = prompts_db.PromptStore(); s.current('Cfa', 'loveda'); "
        "bad = [m for m in ('torch', 'transformers', 'timm') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


# -- migration -----------------------------------------------------------------------------
V1_SQL = """
CREATE TABLE prompts (id INTEGER PRIMARY KEY, zone VARCHAR(16) NOT NULL, class_set VARCHAR(64) NOT NULL,
    version INTEGER NOT NULL, text TEXT NOT NULL, source VARCHAR(128) NOT NULL,
    parent_id INTEGER REFERENCES prompts(id), created_at VARCHAR(40) NOT NULL,
    CONSTRAINT uq_prompt_version UNIQUE (zone, class_set, version));
CREATE TABLE runs (id INTEGER PRIMARY KEY, tile_hash VARCHAR(128) NOT NULL, prompt_id INTEGER REFERENCES prompts(id),
    model_name VARCHAR(128) NOT NULL, checkpoint_hash VARCHAR(128), per_class_iou TEXT NOT NULL,
    created_at VARCHAR(40) NOT NULL);
INSERT INTO prompts VALUES (1, 'Cfa', 'loveda', 1, 'old v1 text about rice paddies', 'template', NULL,
    '2025-01-01T00:00:00+00:00');
INSERT INTO prompts VALUES (2, 'Cfa', 'loveda', 2, 'my v1 edit', 'user', 1, '2025-01-02T00:00:00+00:00');
INSERT INTO runs VALUES (1, 'tileX', 2, 'metasegnet_demo', 'abc', '{"forest": 0.5, "water": 0.7}',
    '2025-01-03T00:00:00+00:00');
PRAGMA user_version = 1;
"""


def upgraded_store(path: Path, old_sql: str) -> tuple[PromptStore, set[str], set[str]]:
    """Write an old-schema file from ``old_sql``, open it with PromptStore (which upgrades it) and
    return (store, table names, prompts columns); asserts the file is at the current version."""
    con = sqlite3.connect(path)
    con.executescript(old_sql)
    con.close()
    s = PromptStore(path)
    con = sqlite3.connect(path)
    try:
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        cols = {r[1] for r in con.execute("PRAGMA table_info(prompts)")}
    finally:
        con.close()
    return s, tables, cols


def test_upgrade_from_v1_file_keeps_data(tmp_path):
    path = tmp_path / "old.sqlite"
    s, _, cols = upgraded_store(path, V1_SQL)
    assert {"author", "token_count", "notes"} <= cols
    cur = s.current("Cfa", "loveda")
    assert cur.id == 2 and cur.text == "my v1 edit" and cur.parent_id == 1
    assert cur.token_count == count_tokens("my v1 edit")
    run = s.runs("tileX")[0]
    assert run["miou"] == pytest.approx(0.6) and run["model_role"] == "metasegnet"
    assert s.current("Cfa", "potsdam").source == "template"  # seeding filled the missing pairs
    new = s.save("Cfa", "loveda", "after upgrade", parent_id=2)
    assert new.version == 3
    s.save_label("tileX", "loveda", "m.png")
    s.close()
    s2 = PromptStore(path)  # reopening does not upgrade or seed again
    assert len(s2.history(1)) == 3 and s2.seed() == 0
    s2.close()


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "future.sqlite"
    con = sqlite3.connect(path)
    con.execute("PRAGMA user_version = 99")
    con.close()
    with pytest.raises(MetasegError):
        PromptStore(path)


# -- concurrency ---------------------------------------------------------------------------
def _edit_worker(path: str, worker: int, n: int, start) -> None:
    start.wait()
    s = PromptStore(path)
    base = s.current("Cfb", "potsdam")
    for i in range(n):
        s.save("Cfb", "potsdam", f"edit {worker}-{i}", parent_id=base.id, author=f"w{worker}")
    s.close()


def _open_worker(path: str, start) -> None:
    start.wait()
    PromptStore(path).close()


def _ctx():
    return mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")


def test_concurrent_writers_keep_every_version(tmp_path):
    path = str(tmp_path / "c.sqlite")
    PromptStore(path).close()
    ctx, n_proc, n_edits = _ctx(), 4, 8
    start = ctx.Barrier(n_proc)
    procs = [ctx.Process(target=_edit_worker, args=(path, w, n_edits, start)) for w in range(n_proc)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    s = PromptStore(path)
    hist = s.history(s.current("Cfb", "potsdam").id)
    texts = {h.text for h in hist}
    assert {f"edit {w}-{i}" for w in range(n_proc) for i in range(n_edits)} <= texts
    assert sorted(h.version for h in hist) == list(range(1, n_proc * n_edits + 2))
    s.close()


def test_concurrent_first_open_seeds_once(tmp_path):
    path = str(tmp_path / "fresh.sqlite")
    ctx, n_proc = _ctx(), 4
    start = ctx.Barrier(n_proc)
    procs = [ctx.Process(target=_open_worker, args=(path, start)) for _ in range(n_proc)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    con = sqlite3.connect(path)
    assert con.execute("select count(*) from prompts").fetchone()[0] == 96
    assert con.execute("select count(distinct zone || class_set) from prompts").fetchone()[0] == 96
    con.close()


def test_readers_do_not_wait_for_a_writer(store):
    store.current("Cfa", "loveda")
    con = sqlite3.connect(store.path, timeout=0.1, isolation_level=None)
    con.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        t0 = time.perf_counter()
        assert store.current("Cfa", "loveda").version == 1
        assert len(store.history(store.current("Cfa", "loveda").id)) == 1
        assert time.perf_counter() - t0 < 2.0
    finally:
        con.execute("ROLLBACK")
        con.close()


def test_threads_share_one_store(store):
    from concurrent.futures import ThreadPoolExecutor

    def edit(i: int) -> int:
        return store.save("Aw", "loveda", f"thread edit {i}").version

    with ThreadPoolExecutor(max_workers=6) as pool:
        versions = sorted(pool.map(edit, range(24)))
    assert versions == list(range(2, 26))


def test_zones_and_class_sets_have_one_home():
    """prompts_db takes the zones from metaseg.climate and the class sets from metaseg.classes;
    its own tables are prompt phrasing keyed by exactly those codes."""
    from metaseg import classes, climate
    from prompts_db import knowledge

    assert knowledge.ZONE_CODES is climate.ZONE_CODES and ZONE_CODES is climate.ZONE_CODES
    assert tuple(knowledge.ZONE_NAMES) == climate.ZONE_CODES
    assert set(knowledge.ZONE_FACTS) <= set(climate.ZONE_CODES)
    assert set(knowledge.GROUP_NAMES) == set(climate.GROUPS) == set(knowledge.GROUP_FACTS)
    assert CLASS_SET_NAMES == tuple(classes.CLASS_SETS)
    info = knowledge.zone_info("cfb")
    assert (info.code, info.name, info.description) == ("Cfb", climate.ZONES["Cfb"].name, climate.ZONES["Cfb"].description)
    with pytest.raises(UnknownNameError, match="not a Köppen climate zone"):
        knowledge.zone_info("generic")

