"""Runs, labels and table export of the prompt database: the part of :class:`PromptStore`
that records what was segmented with which prompt (``runs``) and which ground-truth masks
were saved (``labels``).

Split out of :mod:`prompts_db.store` by concern; :class:`RunsAndLabels` is a mixin that
needs the store's ``engine`` (writes), ``reader`` (reads), ``path`` and ``_id``.
"""

from __future__ import annotations

import builtins
import json
import math
import os
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from prompts_db.errors import PromptNotFoundError
from prompts_db.knowledge import normalize_class_set
from prompts_db.models import Label, Prompt, Run, utc_now

MODEL_ROLES = ("metasegnet", "baseline")


def _clean_float(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class RunsAndLabels:
    """Runs, labels and export methods of :class:`prompts_db.store.PromptStore`."""

    engine: Any
    reader: Any
    path: Any
    _id: Any  # PromptStore._id: a validated prompt id

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
