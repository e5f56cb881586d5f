"""SQLAlchemy 2.x schema of the prompt store (plain SQLite: opens in sqlite-utils and Datasette).

Tables:
  * ``prompts``   — every version of every prompt. A prompt is identified by (``zone``,
    ``class_set``) where ``zone`` is a Köppen code, ``generic`` or ``none`` (the "no text" choice);
    ``version`` counts 1, 2, ... per pair; ``parent_id`` links an edit/restore to the version it
    came from. ``source`` is ``template`` | ``llm:<model>`` | ``user``.
  * ``qa``        — question/answer pairs asked of an LLM, unique per (``model``, ``question``): this
    is also the answer cache, so the same question is never paid for twice.
  * ``prompt_qa`` — which QA pairs (in class order) an LLM-generated prompt version was merged from.
  * ``runs``      — segmentation runs (tile hash, prompt version, model, role, checkpoint hash,
    per-class IoU JSON, mIoU, OA) so prompt versions can be compared on the same tile.
  * ``labels``    — ground-truth masks saved for a tile.

Timestamps are ISO-8601 UTC strings (``2026-01-31T12:00:00.000000+00:00``); JSON is stored as text.
The schema version lives in ``PRAGMA user_version`` (see :mod:`prompts_db.migrations`).
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utc_now() -> str:
    """Current time as an ISO-8601 UTC string with microseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


class Base(DeclarativeBase):
    """Declarative base of all prompt-store tables."""


class Prompt(Base):
    __tablename__ = "prompts"
    __table_args__ = (
        UniqueConstraint("zone", "class_set", "version", name="uq_prompt_version"),
        Index("ix_prompts_zone_class_set", "zone", "class_set"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    zone: Mapped[str] = mapped_column(String(16))
    class_set: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(128))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("prompts.id"), nullable=True)
    author: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[str] = mapped_column(String(40), default=utc_now)
    token_count: Mapped[int] = mapped_column(Integer)
    notes: Mapped[str | None] = mapped_column(Text, nullable=True)


class QA(Base):
    __tablename__ = "qa"
    __table_args__ = (UniqueConstraint("model", "question", name="uq_qa_model_question"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    zone: Mapped[str] = mapped_column(String(16))
    class_set: Mapped[str] = mapped_column(String(64))
    class_name: Mapped[str] = mapped_column(String(64))
    question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)
    model: Mapped[str] = mapped_column(String(128))
    latency_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    completion_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    total_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[str] = mapped_column(String(40), default=utc_now)


class PromptQA(Base):
    __tablename__ = "prompt_qa"

    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"), primary_key=True)
    qa_id: Mapped[int] = mapped_column(ForeignKey("qa.id"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (Index("ix_runs_tile_hash", "tile_hash"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tile_hash: Mapped[str] = mapped_column(String(128))
    prompt_id: Mapped[int | None] = mapped_column(ForeignKey("prompts.id"), nullable=True)
    model_name: Mapped[str] = mapped_column(String(128))
    model_role: Mapped[str] = mapped_column(String(32), default="metasegnet")
    checkpoint_hash: Mapped[str | None] = mapped_column(String(128), nullable=True)
    class_set: Mapped[str | None] = mapped_column(String(64), nullable=True)
    per_class_iou: Mapped[str] = mapped_column(Text, default="{}")
    miou: Mapped[float | None] = mapped_column(Float, nullable=True)
    oa: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[str] = mapped_column(String(40), default=utc_now)


class Label(Base):
    __tablename__ = "labels"
    __table_args__ = (Index("ix_labels_tile_hash", "tile_hash"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tile_hash: Mapped[str] = mapped_column(String(128))
    class_set: Mapped[str] = mapped_column(String(64))
    mask_path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[str] = mapped_column(String(40), default=utc_now)
