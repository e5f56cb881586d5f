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
import logging
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
from prompts_db.models import Prompt, utc_now
from prompts_db.resolve import resolve_prompt
from prompts_db.runs import RunsAndLabels
from prompts_db.tokens import TOKEN_BUDGET, count_tokens

log = logging.getLogger(__name__)

#: Longest prompt text accepted (characters); longer text raises PromptTextError.
MAX_TEXT_CHARS = 20_000
#: Seconds a connection waits for another process's write lock before giving up.
BUSY_TIMEOUT_S = 60.0
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DB = REPO_ROOT / "data" / "metaseg.sqlite"
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


class PromptStore(RunsAndLabels):
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


def prompt_for_location(
    lat: float, lon: float, class_set: str, store: PromptStore | None = None
) -> PromptRecord:
    """Convenience: the current prompt for the climate zone at (lat, lon)."""
    return (store or PromptStore()).prompt_for_location(lat, lon, class_set)
