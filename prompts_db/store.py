"""PromptStore: versioned geographic text prompts, LLM QA cache, runs and labels in one SQLite file.

Concurrency: the file is in WAL mode; every connection sets ``busy_timeout`` and every
transaction starts with ``BEGIN IMMEDIATE`` (the write lock is taken up front), so several
processes editing the same prompt queue up instead of failing or losing a version. Schema
creation/upgrade and seeding run in one such transaction, which makes first use of a fresh file
idempotent and race-safe.

Text is data: stored verbatim (never stripped or rewritten), always bound as SQL parameters.
"""

from __future__ import annotations

import builtins
import html
import json
import logging
import math
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlalchemy.orm import Session

from metaseg.climate import lookup
from metaseg.errors import MetasegError
from prompts_db.errors import PromptNotFoundError, PromptTextError
from prompts_db.knowledge import (
    CLASS_SET_NAMES,
    GENERIC,
    NO_TEXT,
    ZONE_CODES,
    knowledge_prompt,
    normalize_class_set,
    normalize_zone,
)
from prompts_db.migrations import SCHEMA_VERSION, upgrade
from prompts_db.models import Label, Prompt, Run, utc_now
from prompts_db.resolve import resolve_prompt
from prompts_db.tokens import TOKEN_BUDGET, count_tokens

log = logging.getLogger(__name__)

#: Longest prompt text accepted (characters); longer text raises PromptTextError.
MAX_TEXT_CHARS = 20_000
#: Seconds a connection waits for another process's write lock before giving up.
BUSY_TIMEOUT_S = 60.0
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DB = REPO_ROOT / "data" / "metaseg.sqlite"
MODEL_ROLES = ("metasegnet", "baseline")
READ_ONLY = "prompts_db_read_only"


def default_db_path() -> Path:
    """``$METASEG_DB`` if set, else ``data/metaseg.sqlite`` in the repository root."""
    env = os.environ.get("METASEG_DB")
    return Path(env).expanduser() if env else DEFAULT_DB


@dataclass(frozen=True)
class PromptRecord:
    """One stored prompt version.

    ``zone`` is a Köppen code, ``"generic"`` or ``"none"`` (no text: empty ``text``, run without a
    prompt). ``source`` is ``template``, ``user`` or ``llm:<model>``. ``created_at`` is ISO-8601 UTC.
    """

    id: int
    zone: str
    class_set: str
    text: str
    source: str
    parent_id: int | None
    token_count: int
    created_at: str
    version: int = 1
    author: str | None = None
    notes: str | None = None

    @property
    def is_no_text(self) -> bool:
        return self.zone == NO_TEXT

    @property
    def over_budget(self) -> bool:
        return self.token_count > TOKEN_BUDGET

    def to_dict(self) -> dict[str, Any]:
        """The public JSON object: ``id, zone, class_set, text, source, parent_id, token_count, created_at``."""
        return {
            "id": self.id,
            "zone": self.zone,
            "class_set": self.class_set,
            "text": self.text,
            "source": self.source,
            "parent_id": self.parent_id,
            "token_count": self.token_count,
            "created_at": self.created_at,
        }

    def to_full_dict(self) -> dict[str, Any]:
        """All fields, including ``version``, ``author`` and ``notes``."""
        return asdict(self)

    def to_html(self) -> str:
        """The prompt text escaped for safe inclusion in HTML (text is untrusted data)."""
        return html_escape(self.text)

    @classmethod
    def _from_row(cls, row: Prompt) -> PromptRecord:
        return cls(
            id=row.id,
            zone=row.zone,
            class_set=row.class_set,
            text=row.text,
            source=row.source,
            parent_id=row.parent_id,
            token_count=int(row.token_count or 0),
            created_at=row.created_at,
            version=row.version,
            author=row.author,
            notes=row.notes,
        )


def html_escape(text: str) -> str:
    """Escape prompt text for HTML (``<``, ``>``, ``&`` and quotes); newlines become ``<br>``."""
    return html.escape(text or "", quote=True).replace("\n", "<br>")


def validate_text(text: Any) -> str:
    """Reject non-string, empty (whitespace only) and over-long text; return it unchanged."""
    if not isinstance(text, str):
        raise PromptTextError(f"prompt text must be a string, got {type(text).__name__}")
    if not text.strip():
        raise PromptTextError("prompt text is empty; use the 'none' zone to run without text")
    if len(text) > MAX_TEXT_CHARS:
        raise PromptTextError(f"prompt text has {len(text)} characters; the limit is {MAX_TEXT_CHARS}")
    if "\x00" in text:
        raise PromptTextError("prompt text contains a NUL character")
    try:  # SQLite and the tokenizer need valid UTF-8 (undecodable argv bytes arrive as lone surrogates)
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise PromptTextError("prompt text is not valid Unicode (it contains a lone surrogate code point)") from None
    return text


def _validate_source(source: str) -> str:
    if source in ("template", "user") or (
        isinstance(source, str) and source.startswith("llm:") and len(source) > 4 and len(source) <= 128
    ):
        return source
    raise PromptTextError(f"invalid prompt source {source!r}; use 'template', 'user' or 'llm:<model>'")


def _clean_float(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def make_engine(path: Path) -> Engine:
    """SQLAlchemy engine for ``path``: WAL, busy_timeout, foreign keys, ``BEGIN IMMEDIATE``."""
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # noqa: ANN001
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:  # noqa: ANN001
        # writers take the write lock up front; read-only sessions (READ_ONLY option) use a
        # deferred BEGIN, which in WAL mode never waits for a writer
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")

    return engine


class PromptStore:
    """Versioned prompt store in one SQLite file (created, upgraded and seeded on first use).

    Args:
        path: database file; default ``$METASEG_DB`` or ``data/metaseg.sqlite`` in the repo root.
        seed: seed offline prompts for all 30 zones x class sets, ``generic`` and ``none``.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, seed: bool = True) -> None:
        self.path = Path(path).expanduser() if path is not None else default_db_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.engine = make_engine(self.path)
        #: same pool, deferred BEGIN: for sessions that only read
        self.reader = self.engine.execution_options(**{READ_ONLY: True})
        try:
            with self.engine.begin() as conn:
                before = upgrade(conn)
        except DatabaseError as exc:
            self.engine.dispose()
            if isinstance(exc, OperationalError):  # locked, unreadable folder, ...: callers report these
                raise
            raise MetasegError(f"{self.path.name} is not a usable prompt database: {exc.orig}") from None
        if 0 < before < SCHEMA_VERSION:  # a file of the current version was not upgraded
            log.info("prompt database %s upgraded from schema v%d", self.path, before)
        if seed:
            self.seed()

    def close(self) -> None:
        """Dispose of pooled connections."""
        self.engine.dispose()

    def __enter__(self) -> PromptStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- seeding ---------------------------------------------------------------------------
    def seed(self, class_sets: Iterable[str] = CLASS_SET_NAMES) -> int:
        """Add the offline seed prompts for every (zone, class set) that has no version yet.

        Idempotent and race-safe (one ``BEGIN IMMEDIATE`` transaction). Returns rows added.
        """
        class_sets = [normalize_class_set(cs) for cs in class_sets]
        pairs = [(z, cs) for cs in class_sets for z in (*ZONE_CODES, GENERIC, NO_TEXT)]
        with Session(self.reader) as s:  # cheap check first: nothing to do on every later open
            have = set(s.execute(select(Prompt.zone, Prompt.class_set).distinct()).tuples())
        missing = [p for p in pairs if p not in have]
        if not missing:
            return 0
        texts = {(z, cs): knowledge_prompt(z, cs) for z, cs in missing}  # computed outside the lock
        added = 0
        with Session(self.engine) as s, s.begin():
            have = set(s.execute(select(Prompt.zone, Prompt.class_set).distinct()).tuples())  # re-check
            now = utc_now()
            for zone, cs in missing:
                if (zone, cs) in have:
                    continue
                text = texts[(zone, cs)]
                note = "no text: run without a prompt" if zone == NO_TEXT else "offline seed"
                s.add(
                    Prompt(
                        zone=zone,
                        class_set=cs,
                        version=1,
                        text=text,
                        source="template",
                        parent_id=None,
                        author="seed",
                        created_at=now,
                        token_count=count_tokens(text),
                        notes=note,
                    )
                )
                added += 1
        if added:
            log.info("seeded %d prompts into %s", added, self.path)
        return added

    # -- prompts ---------------------------------------------------------------------------
    def _key(self, zone: str | None, class_set: str) -> tuple[str, str]:
        return (GENERIC if zone is None else normalize_zone(zone)), normalize_class_set(class_set)

    def current(self, zone: str | None, class_set: str) -> PromptRecord:
        """Latest version for (zone, class_set); ``zone=None`` gives the generic prompt.

        ``zone="none"`` gives the "no text" record (empty text).
        """
        zone, class_set = self._key(zone, class_set)
        with Session(self.reader) as s:
            row = s.scalars(
                select(Prompt)
                .where(Prompt.zone == zone, Prompt.class_set == class_set)
                .order_by(Prompt.version.desc())
                .limit(1)
            ).first()
            if row is not None:
                return PromptRecord._from_row(row)
        self.seed([class_set])  # a pair with no version yet (e.g. a file seeded for other sets)
        return self.current(zone, class_set)

    def get(self, id: int) -> PromptRecord:  # noqa: A002 - public API name
        """The prompt version with this id (PromptNotFoundError if none)."""
        with Session(self.reader) as s:
            row = s.get(Prompt, self._id(id))
            if row is None:
                raise PromptNotFoundError(f"no prompt with id {id}")
            return PromptRecord._from_row(row)

    @staticmethod
    def _id(value: Any) -> int:
        try:
            out = int(value)
        except (TypeError, ValueError):
            raise PromptNotFoundError(f"invalid prompt id {value!r}") from None
        if isinstance(value, float) and value != out:
            raise PromptNotFoundError(f"invalid prompt id {value!r}")
        if not -(2**63) <= out < 2**63:  # beyond SQLite INTEGER: OverflowError in the driver otherwise
            raise PromptNotFoundError(f"no prompt with id {out}")
        return out

    def save(
        self,
        zone: str | None,
        class_set: str,
        text: str,
        source: str = "user",
        parent_id: int | None = None,
        author: str | None = None,
        notes: str | None = None,
        qa_ids: list[int] | None = None,
    ) -> PromptRecord:
        """Store ``text`` verbatim as the next version of (zone, class_set) and return it.

        Raises:
            PromptTextError: empty or too long text, bad source, or an attempt to edit ``none``.
            PromptNotFoundError: ``parent_id`` does not exist or belongs to another (zone, class set).
        """
        from prompts_db.models import PromptQA

        zone, class_set = self._key(zone, class_set)
        if zone == NO_TEXT:
            raise PromptTextError("the 'none' zone means running without text and cannot be edited")
        validate_text(text)
        _validate_source(source)
        tokens = count_tokens(text)
        if tokens > TOKEN_BUDGET:
            log.warning(
                "prompt for %s/%s has %d tokens; the encoder keeps %d", zone, class_set, tokens, TOKEN_BUDGET
            )
        with Session(self.engine) as s, s.begin():
            if parent_id is not None:
                parent = s.get(Prompt, self._id(parent_id))
                if parent is None:
                    raise PromptNotFoundError(f"no prompt with id {parent_id}")
                if (parent.zone, parent.class_set) != (zone, class_set):
                    raise PromptNotFoundError(
                        f"prompt {parent_id} belongs to {parent.zone}/{parent.class_set}, not {zone}/{class_set}"
                    )
            last = s.scalar(
                select(func.max(Prompt.version)).where(Prompt.zone == zone, Prompt.class_set == class_set)
            )
            row = Prompt(
                zone=zone,
                class_set=class_set,
                version=(last or 0) + 1,
                text=text,
                source=source,
                parent_id=parent_id,
                author=author,
                created_at=utc_now(),
                token_count=tokens,
                notes=notes,
            )
            s.add(row)
            s.flush()
            for pos, qa_id in enumerate(qa_ids or []):
                s.add(PromptQA(prompt_id=row.id, qa_id=int(qa_id), position=pos))
            s.flush()
            record = PromptRecord._from_row(row)
        log.info("saved prompt %d (%s/%s v%d, %s)", record.id, zone, class_set, record.version, source)
        return record

    def history(self, id: int) -> builtins.list[PromptRecord]:  # noqa: A002
        """Every version of the (zone, class set) that prompt ``id`` belongs to, newest first.

        This is the whole version line of that pair (not only ``id``'s ancestors), so restores and
        edits branching from old versions all appear; ``parent_id`` tells the lineage.
        """
        rec = self.get(id)
        return self.list(zone=rec.zone, class_set=rec.class_set)

    def list(
        self,
        zone: str | None = None,
        class_set: str | None = None,
        latest_only: bool = False,
        source: str | None = None,
    ) -> builtins.list[PromptRecord]:
        """Prompt versions filtered by zone/class set/source (prefix ``llm:`` matches all LLMs).

        Ordered by zone, class set, newest version first; ``latest_only`` keeps one per pair.
        """
        stmt = select(Prompt)
        if zone is not None:
            stmt = stmt.where(Prompt.zone == normalize_zone(zone))
        if class_set is not None:
            stmt = stmt.where(Prompt.class_set == normalize_class_set(class_set))
        if source is not None:
            stmt = stmt.where(
                Prompt.source.startswith(source) if source == "llm:" else Prompt.source == source
            )
        stmt = stmt.order_by(Prompt.zone, Prompt.class_set, Prompt.version.desc())
        with Session(self.reader) as s:
            rows = [PromptRecord._from_row(r) for r in s.scalars(stmt)]
        if latest_only:
            seen: set[tuple[str, str]] = set()
            rows = [
                r for r in rows if (r.zone, r.class_set) not in seen and not seen.add((r.zone, r.class_set))
            ]
        return rows

    def restore(self, id: int, author: str | None = None) -> PromptRecord:  # noqa: A002
        """New version copying the text of version ``id`` (parent = ``id``, same source)."""
        old = self.get(id)
        return self.save(
            old.zone,
            old.class_set,
            old.text,
            source=old.source,
            parent_id=old.id,
            author=author,
            notes=f"restored from version {old.version} (id {old.id})",
        )

    def generate(
        self,
        zone: str | None,
        class_set: str,
        llm: bool = False,
        author: str | None = None,
        **llm_options: Any,
    ) -> PromptRecord:
        """Create a new version from the offline knowledge (``template``) or the LLM pipeline.

        ``llm_options`` go to :func:`prompts_db.llm.generate_prompt` (model, base_url, timeout, ...).
        """
        zone, class_set = self._key(zone, class_set)
        if zone == NO_TEXT:
            raise PromptTextError("the 'none' zone has no text to generate")
        parent = self.current(zone, class_set)
        if llm:
            from prompts_db.llm import generate_prompt

            return generate_prompt(self, zone, class_set, parent_id=parent.id, author=author, **llm_options)
        text = knowledge_prompt(zone, class_set)
        return self.save(
            zone,
            class_set,
            text,
            source="template",
            parent_id=parent.id,
            author=author,
            notes="offline knowledge prompt",
        )

    def prompt_for_location(self, lat: float, lon: float, class_set: str) -> PromptRecord:
        """Current prompt for the Köppen zone at (lat, lon); ocean/no data → the generic prompt
        (the policy of :func:`prompts_db.resolve.resolve_prompt`)."""
        result = lookup(lat, lon)
        zone = result.zone.code if result.zone is not None else None
        return resolve_prompt(self, class_set, zone=zone, reason=result.reason).record

    # -- runs and labels ---------------------------------------------------------------------
    def log_run(
        self,
        tile_hash: str,
        model_name: str,
        per_class_iou: dict[str, float | None],
        prompt_id: int | None = None,
        checkpoint_hash: str | None = None,
        model_role: str = "metasegnet",
        miou: float | None = None,
        oa: float | None = None,
        class_set: str | None = None,
    ) -> dict[str, Any]:
        """Record one segmentation run; ``miou`` defaults to the mean of the finite IoUs.

        Non-finite IoUs (class absent) are stored as JSON ``null``. Returns the run as a dict.
        """
        from metaseg.errors import MetasegError

        if not tile_hash or not model_name:
            raise MetasegError("a run needs a tile hash and a model name")
        if model_role not in MODEL_ROLES:
            raise MetasegError(f"unknown model role {model_role!r}; valid: {', '.join(MODEL_ROLES)}")
        iou = {str(k): _clean_float(v) for k, v in dict(per_class_iou).items()}
        finite = [v for v in iou.values() if v is not None]
        if miou is None and finite:
            miou = sum(finite) / len(finite)
        with Session(self.engine) as s, s.begin():
            if prompt_id is not None and s.get(Prompt, self._id(prompt_id)) is None:
                raise PromptNotFoundError(f"no prompt with id {prompt_id}")
            row = Run(
                tile_hash=str(tile_hash),
                prompt_id=prompt_id,
                model_name=model_name,
                model_role=model_role,
                checkpoint_hash=checkpoint_hash,
                class_set=class_set,
                per_class_iou=json.dumps(iou),
                miou=_clean_float(miou),
                oa=_clean_float(oa),
                created_at=utc_now(),
            )
            s.add(row)
            s.flush()
            return _run_dict(row)

    def runs(self, tile_hash: str | None = None) -> builtins.list[dict[str, Any]]:
        """Logged runs (all, or of one tile), newest first, ``per_class_iou`` as a dict."""
        stmt = select(Run).order_by(Run.id.desc())
        if tile_hash is not None:
            stmt = stmt.where(Run.tile_hash == tile_hash)
        with Session(self.reader) as s:
            return [_run_dict(r) for r in s.scalars(stmt)]

    def compare_prompt_versions(self, tile_hash: str) -> builtins.list[dict[str, Any]]:
        """Table rows comparing every run on ``tile_hash``, newest first.

        Each row: ``run_id, created_at, model_role, model_name, checkpoint_hash, prompt_id, zone,
        class_set, prompt_version, prompt_source, token_count, miou, oa, delta_miou, per_class_iou,
        delta_iou``. Deltas are against the most recent baseline run on the same tile (None if
        there is none, or for baseline rows).
        """
        runs = self.runs(tile_hash)
        baseline = next((r for r in runs if r["model_role"] == "baseline"), None)
        prompt_ids = {r["prompt_id"] for r in runs if r["prompt_id"] is not None}
        with Session(self.reader) as s:
            prompts = {p.id: p for p in s.scalars(select(Prompt).where(Prompt.id.in_(prompt_ids)))}
        rows = []
        for r in runs:
            p = prompts.get(r["prompt_id"])
            delta_miou, delta_iou = None, None
            if baseline is not None and r["model_role"] != "baseline":
                if r["miou"] is not None and baseline["miou"] is not None:
                    delta_miou = r["miou"] - baseline["miou"]
                delta_iou = {
                    k: (v - baseline["per_class_iou"][k])
                    if v is not None and baseline["per_class_iou"].get(k) is not None
                    else None
                    for k, v in r["per_class_iou"].items()
                }
            rows.append(
                {
                    "run_id": r["id"],
                    "created_at": r["created_at"],
                    "model_role": r["model_role"],
                    "model_name": r["model_name"],
                    "checkpoint_hash": r["checkpoint_hash"],
                    "prompt_id": r["prompt_id"],
                    "zone": p.zone if p else None,
                    "class_set": p.class_set if p else r["class_set"],
                    "prompt_version": p.version if p else None,
                    "prompt_source": p.source if p else None,
                    "token_count": p.token_count if p else None,
                    "miou": r["miou"],
                    "oa": r["oa"],
                    "delta_miou": delta_miou,
                    "per_class_iou": r["per_class_iou"],
                    "delta_iou": delta_iou,
                }
            )
        return rows

    def save_label(self, tile_hash: str, class_set: str, mask_path: str | os.PathLike[str]) -> dict[str, Any]:
        """Record a ground-truth mask file for a tile; returns the label row as a dict."""
        from metaseg.errors import MetasegError

        if not tile_hash:
            raise MetasegError("a label needs a tile hash")
        class_set = normalize_class_set(class_set)
        with Session(self.engine) as s, s.begin():
            row = Label(
                tile_hash=str(tile_hash), class_set=class_set, mask_path=str(mask_path), created_at=utc_now()
            )
            s.add(row)
            s.flush()
            return _label_dict(row)

    def labels(
        self, tile_hash: str | None = None, class_set: str | None = None
    ) -> builtins.list[dict[str, Any]]:
        """Saved labels (optionally of one tile / class set), newest first."""
        stmt = select(Label).order_by(Label.id.desc())
        if tile_hash is not None:
            stmt = stmt.where(Label.tile_hash == tile_hash)
        if class_set is not None:
            stmt = stmt.where(Label.class_set == normalize_class_set(class_set))
        with Session(self.reader) as s:
            return [_label_dict(r) for r in s.scalars(stmt)]

    # -- export ---------------------------------------------------------------------------
    def export(self, fmt: str = "json", table: str = "prompts") -> str:
        """All rows of ``table`` as CSV or JSON text (via sqlite-utils)."""
        import csv
        import io

        import sqlite_utils

        from metaseg.errors import MetasegError

        if fmt not in ("csv", "json"):
            raise MetasegError(f"unknown export format {fmt!r}; valid: csv, json")
        db = sqlite_utils.Database(str(self.path))
        try:
            if table not in db.table_names():
                raise MetasegError(f"unknown table {table!r}; valid: {', '.join(db.table_names())}")
            rows = builtins.list(db[table].rows_where(order_by="id"))
            columns = [c.name for c in db[table].columns]
        finally:
            db.close()
        if fmt == "json":
            return json.dumps(rows, ensure_ascii=False, indent=2)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue()


def _run_dict(r: Run) -> dict[str, Any]:
    return {
        "id": r.id,
        "tile_hash": r.tile_hash,
        "prompt_id": r.prompt_id,
        "model_name": r.model_name,
        "model_role": r.model_role,
        "checkpoint_hash": r.checkpoint_hash,
        "class_set": r.class_set,
        "per_class_iou": json.loads(r.per_class_iou or "{}"),
        "miou": r.miou,
        "oa": r.oa,
        "created_at": r.created_at,
    }


def _label_dict(r: Label) -> dict[str, Any]:
    return {
        "id": r.id,
        "tile_hash": r.tile_hash,
        "class_set": r.class_set,
        "mask_path": r.mask_path,
        "created_at": r.created_at,
    }


def prompt_for_location(
    lat: float, lon: float, class_set: str, store: PromptStore | None = None
) -> PromptRecord:
    """Convenience: the current prompt for the climate zone at (lat, lon)."""
    return (store or PromptStore()).prompt_for_location(lat, lon, class_set)
