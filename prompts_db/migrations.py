"""Schema versions of the prompt store and the ordered upgrade path between them.

The version lives in ``PRAGMA user_version`` (0 = empty file). :data:`MIGRATIONS` is an ordered
list; entry ``i`` upgrades a file from version ``i + 1`` to ``i + 2``. :func:`upgrade` runs inside
the caller's write transaction (``BEGIN IMMEDIATE``), so concurrent openers upgrade exactly once.

History:
  * v1 — ``prompts(id, zone, class_set, version, text, source, parent_id, created_at)`` and
    ``runs(id, tile_hash, prompt_id, model_name, checkpoint_hash, per_class_iou, created_at)``.
  * v2 — prompts gain ``author``, ``token_count``, ``notes``; runs gain ``model_role``,
    ``class_set``, ``miou``, ``oa``; new tables ``qa``, ``prompt_qa``, ``labels``.
  * v3 — new tables ``experiments``, ``experiment_tiles``, ``experiment_results`` (prompt
    experiments of ``training.sweep``); existing tables unchanged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from sqlalchemy import Connection, text

from prompts_db.models import Base

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3


def _columns(conn: Connection, table: str) -> set[str]:
    return {row[1] for row in conn.exec_driver_sql(f"PRAGMA table_info({table})")}


def _v1_to_v2(conn: Connection) -> None:
    from prompts_db.tokens import count_tokens

    cols = _columns(conn, "prompts")
    for name, ddl in (("author", "VARCHAR(128)"), ("token_count", "INTEGER"), ("notes", "TEXT")):
        if name not in cols:
            conn.exec_driver_sql(f"ALTER TABLE prompts ADD COLUMN {name} {ddl}")
    rows = conn.execute(text("SELECT id, text FROM prompts WHERE token_count IS NULL")).all()
    for pid, body in rows:
        conn.execute(
            text("UPDATE prompts SET token_count = :n WHERE id = :id"),
            {"n": count_tokens(body or ""), "id": pid},
        )
    cols = _columns(conn, "runs")
    for name, ddl in (
        ("model_role", "VARCHAR(32) NOT NULL DEFAULT 'metasegnet'"),
        ("class_set", "VARCHAR(64)"),
        ("miou", "FLOAT"),
        ("oa", "FLOAT"),
    ):
        if name not in cols:
            conn.exec_driver_sql(f"ALTER TABLE runs ADD COLUMN {name} {ddl}")
    for rid, iou in conn.execute(text("SELECT id, per_class_iou FROM runs WHERE miou IS NULL")).all():
        try:
            values = [float(v) for v in json.loads(iou or "{}").values() if v is not None]
        except (ValueError, TypeError, AttributeError):
            values = []
        if values:
            conn.execute(
                text("UPDATE runs SET miou = :m WHERE id = :id"), {"m": sum(values) / len(values), "id": rid}
            )
    Base.metadata.create_all(conn)  # new tables and indexes only; existing ones are left alone


def _v2_to_v3(conn: Connection) -> None:
    from prompts_db.models import Experiment, ExperimentResult, ExperimentTile

    tables = [Experiment.__table__, ExperimentTile.__table__, ExperimentResult.__table__]
    Base.metadata.create_all(conn, tables=tables)  # new tables and their indexes only


#: Ordered upgrade steps: MIGRATIONS[i] takes a file from version i + 1 to i + 2.
MIGRATIONS: list[Callable[[Connection], None]] = [_v1_to_v2, _v2_to_v3]
assert len(MIGRATIONS) == SCHEMA_VERSION - 1  # developer invariant


def get_version(conn: Connection) -> int:
    return int(conn.exec_driver_sql("PRAGMA user_version").scalar() or 0)


def upgrade(conn: Connection) -> int:
    """Create or upgrade the schema on ``conn`` (inside an open write transaction).

    Returns:
        The version the file had before (0 for a new file).

    Raises:
        MetasegError: the file was written by a newer version of this program.
    """
    from metaseg.errors import MetasegError

    before = get_version(conn)
    if before > SCHEMA_VERSION:
        raise MetasegError(
            f"prompt database schema v{before} is newer than this program supports (v{SCHEMA_VERSION})"
        )
    if before == 0:
        has_tables = conn.exec_driver_sql(
            "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='prompts'"
        ).scalar()
        if has_tables:  # an unversioned file with our tables: treat it as v1
            before = 1
        else:
            Base.metadata.create_all(conn)
            conn.exec_driver_sql(f"PRAGMA user_version = {SCHEMA_VERSION}")
            return 0
    for step in range(before, SCHEMA_VERSION):
        log.info("upgrading prompt database schema v%d -> v%d", step, step + 1)
        MIGRATIONS[step - 1](conn)
        conn.exec_driver_sql(f"PRAGMA user_version = {step + 1}")
    return before
