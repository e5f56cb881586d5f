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
  * ``experiments``, ``experiment_tiles``, ``experiment_results`` — prompt experiments
    (``python -m training.sweep``): one experiment row (model and checkpoint hash, baseline,
    dataset, split, variants, status, timings), one row per tile (zone, seconds, the baseline's
    confusion matrix) and one row per tile × variant (prompt version id used, confusion matrix,
    per-class intersection and union counts). Confusion matrices are ``K × K`` JSON lists (rows
    ground truth, columns prediction), so every aggregate is recomputed exactly from counts.

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


class Experiment(Base):
    __tablename__ = "experiments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[str] = mapped_column(String(40), default=utc_now)
    finished_at: Mapped[str | None] = mapped_column(String(40), nullable=True)
    #: ``running`` while the sweep writes, then ``complete`` or ``incomplete`` (interrupted/failed tiles)
    status: Mapped[str] = mapped_column(String(16), default="running")
    model_name: Mapped[str] = mapped_column(String(128))
    checkpoint: Mapped[str | None] = mapped_column(Text, nullable=True)
    checkpoint_hash: Mapped[str | None] = mapped_column(String(128), nullable=True)
    baseline_name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    baseline_checkpoint: Mapped[str | None] = mapped_column(Text, nullable=True)
    baseline_checkpoint_hash: Mapped[str | None] = mapped_column(String(128), nullable=True)
    backend: Mapped[str] = mapped_column(String(32), default="torch")
    dataset: Mapped[str] = mapped_column(String(64))
    split: Mapped[str] = mapped_column(String(32))
    root: Mapped[str] = mapped_column(Text)
    class_set: Mapped[str] = mapped_column(String(64))
    class_names: Mapped[str] = mapped_column(Text, default="[]")  # JSON list, index order
    scored: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of class indices in the means
    variants: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of variant names, as asked
    n_tiles: Mapped[int] = mapped_column(Integer, default=0)  # tiles planned
    runner: Mapped[str] = mapped_column(Text, default="{}")  # JSON: workers / scheduler address
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)  # wall clock of the sweep
    timings: Mapped[str] = mapped_column(Text, default="{}")  # JSON: model / tile seconds
    errors: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of {tile, reason}
    notes: Mapped[str | None] = mapped_column(Text, nullable=True)


class ExperimentTile(Base):
    __tablename__ = "experiment_tiles"
    __table_args__ = (
        UniqueConstraint("experiment_id", "tile", name="uq_experiment_tile"),
        Index("ix_experiment_tiles_experiment", "experiment_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)  # index of the tile in the split's listing
    tile: Mapped[str] = mapped_column(String(256))  # the dataset's sample id
    image: Mapped[str] = mapped_column(Text)
    label: Mapped[str | None] = mapped_column(Text, nullable=True)
    zone: Mapped[str | None] = mapped_column(String(16), nullable=True)
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    baseline_confusion: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON K×K
    created_at: Mapped[str] = mapped_column(String(40), default=utc_now)


class ExperimentResult(Base):
    __tablename__ = "experiment_results"
    __table_args__ = (
        UniqueConstraint("tile_id", "variant", name="uq_experiment_result"),
        Index("ix_experiment_results_experiment_variant", "experiment_id", "variant"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"))
    tile_id: Mapped[int] = mapped_column(ForeignKey("experiment_tiles.id", ondelete="CASCADE"))
    variant: Mapped[str] = mapped_column(String(64))
    #: the stored prompt version the tile got (None: a text that is no stored version)
    prompt_id: Mapped[int | None] = mapped_column(ForeignKey("prompts.id"), nullable=True)
    #: the text itself when it is not a stored version (else None: read it from ``prompts``)
    prompt_text: Mapped[str | None] = mapped_column(Text, nullable=True)
    confusion: Mapped[str] = mapped_column(Text)  # JSON K×K, rows ground truth
    intersection: Mapped[str] = mapped_column(Text)  # JSON list (K,): TP per class
    union: Mapped[str] = mapped_column(Text)  # JSON list (K,): TP + FP + FN per class
