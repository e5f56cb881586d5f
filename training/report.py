"""The evaluation report: metrics in percent as ``training.evaluate --json`` prints them, and its table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def pct(x: float | None) -> float | None:
    return None if x is None else round(100.0 * x, 2)


def build_report(metrics: Any, class_set: Any, scored: Sequence[int], **info: Any) -> dict[str, Any]:
    """The ``--json`` object (values in percent)."""
    raw = metrics.to_dict()
    per_class = {name: {k: pct(v) for k, v in vals.items()} for name, vals in raw["per_class"].items()}
    report: dict[str, Any] = {
        "miou": pct(raw["miou"]),
        "oa": pct(raw["oa"]),
        "mf1": pct(raw["mf1"]),
        "precision": pct(raw["precision"]),
        "recall": pct(raw["recall"]),
        "per_class": per_class,
        "f1_of_means": pct(raw["f1_of_means"]),
        "n_pixels": raw["n_pixels"],
        "units": "percent",
        "class_set": class_set.name,
        **info,
    }
    unscored = [class_set.names[i] for i in range(class_set.num_classes) if i not in set(scored)]
    if unscored:
        why = (
            "not in the class map (zero-shot: only overlapping classes are scored)"
            if info.get("class_map")
            else "not scored by the dataset's protocol"
        )
        report["note"] = (
            f"means and per_class exclude {', '.join(unscored)} ({why}); OA counts every labelled pixel"
        )
    return report


def format_table(report: dict[str, Any]) -> str:
    """A per-class table in the style of the paper's Table I (rows = classes)."""

    def f(v: float | None) -> str:
        return "   -  " if v is None else f"{v:6.2f}"

    width = max([len("class")] + [len(n) for n in report["per_class"]]) + 2
    lines = [
        f"{report['model']} on {report['dataset']}/{report['split']} ({report['n_images']} tiles, "
        f"prompt={report['prompt_mode']}, tta={'on' if report['tta'] else 'off'}), percent",
        f"{'class':<{width}}{'IoU':>8}{'F1':>8}{'Prec.':>8}{'Recall':>8}",
    ]
    for name, v in report["per_class"].items():
        lines.append(
            f"{name:<{width}}{f(v['iou']):>8}{f(v['f1']):>8}{f(v['precision']):>8}{f(v['recall']):>8}"
        )
    lines.append("-" * (width + 32))
    lines.append(
        f"{'mean':<{width}}{f(report['miou']):>8}{f(report['mf1']):>8}"
        f"{f(report['precision']):>8}{f(report['recall']):>8}"
    )
    lines.append(
        f"mIoU {f(report['miou']).strip()}  OA {f(report['oa']).strip()}  mF1 {f(report['mf1']).strip()}"
    )
    if report.get("note"):
        lines.append(f"note: {report['note']}")
    return "\n".join(lines)
