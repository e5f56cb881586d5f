"""What a sweep reports: checkpoint identities, the JSON report and the leaderboard table."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def checkpoint_info(name: str | None, checkpoint: str | None) -> dict[str, Any]:
    """``{"name", "checkpoint", "hash", "class_set", "uses_text"}`` without loading the model.

    Built from :func:`metaseg.checkpoints.checkpoint_identity`, the one fingerprint of the project:
    ``hash`` is its 12-hex ``short`` (weights and metadata JSON), so it matches map resumes, ONNX
    caches and the app. A checkpoint that does not record ``uses_text`` counts as a text model.
    """
    from metaseg.checkpoints import checkpoint_identity

    ident = checkpoint_identity(name, checkpoint)
    path = Path(ident.path)
    return {
        "name": str(ident.name),
        "checkpoint": str(path.resolve()) if path.exists() else str(path),
        "hash": ident.short,
        "class_set": ident.class_set,
        "uses_text": True if ident.uses_text is None else bool(ident.uses_text),
    }


def _summary_line(name: str, m: dict[str, Any], ref: dict[str, Any] | None) -> str:
    def f(v: float | None) -> str:
        return "    -" if v is None else f"{v:6.2f}"

    delta = ""
    if ref is not None and m["miou"] is not None and ref["miou"] is not None:
        delta = f"{m['miou'] - ref['miou']:+8.2f}"
    return f"{name:<14}{f(m['miou']):>8}{f(m['mf1']):>8}{f(m['oa']):>8}{delta}"


def format_table(report: dict[str, Any]) -> str:
    """Leaderboard: variant, mIoU, mF1, OA, ΔmIoU vs the baseline."""
    base = report.get("baseline")
    lines = [
        f"experiment {report['experiment_id']} ({report['status']}): {report['model']} on "
        f"{report['dataset']}/{report['split']}, {report['tiles']}/{report['n_tiles']} tiles, percent",
        f"{'variant':<14}{'mIoU':>8}{'mF1':>8}{'OA':>8}" + ("  ΔmIoU vs baseline" if base else ""),
    ]
    if base:
        lines.append(_summary_line("baseline", base, None))
    for v, m in report["variants"].items():
        lines.append(_summary_line(v, m, base))
    if report["errors"]:
        e = report["errors"][0]
        lines.append(f"{len(report['errors'])} tile(s) failed, e.g. {e['tile']}: {e['reason']}")
    return "\n".join(lines)




def _public(m: dict[str, Any] | None) -> dict[str, Any] | None:
    if m is None:
        return None
    return {k: m[k] for k in ("miou", "oa", "mf1", "precision", "recall", "per_class")}
