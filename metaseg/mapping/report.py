"""The job's records and what is reported from them: ``summary.json`` tiles, the area report
(hectares per zone × class, Markdown + CSV), the exit code and the CLI's text lines.

Areas: ``area_ha`` sums the equal-area (EPSG:6933) areas of *all* polygons, measured before
simplification and before the ``min_area_m2`` filter, so the statistics do not depend on the
vector-size options.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from metaseg.mapping.layout import MASKS_DIR, NO_ZONE, REPORT_CSV, REPORT_MD, SUMMARY_NAME, atomic_write_text


@dataclass
class TileRecord:
    """One entry of ``summary.json``'s ``tiles``.

    ``fingerprint`` identifies what made the mask now on disk (``None``: no current mask); ``--resume``
    reuses a mask whose fingerprint equals the one the current inputs and settings give.
    """

    path: str
    id: str
    status: str = "pending"  # pending while the job runs; then ok | failed | skipped
    zone: str | None = None
    reason: str | None = None
    seconds: float = 0.0
    mask: str | None = None
    windows: int = 0
    polygons: int = 0
    prompt_id: int | None = None
    fingerprint: str | None = None
    area_m2: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["seconds"] = round(float(self.seconds), 3)
        d.pop("area_m2")
        return d


def area_ha(records: Sequence[TileRecord]) -> dict[str, dict[str, float]]:
    """Hectares per zone (``none`` without one) and class of the mapped (ok or skipped) tiles."""
    totals: dict[str, dict[str, float]] = {}
    for rec in records:
        if rec.status not in ("ok", "skipped"):
            continue
        zone = totals.setdefault(rec.zone or NO_ZONE, {})
        for name, m2 in rec.area_m2.items():
            zone[name] = zone.get(name, 0.0) + m2
    return {z: {c: round(m2 / 10_000.0, 4) for c, m2 in sorted(v.items())} for z, v in sorted(totals.items())}


def write_report(records: Sequence[TileRecord], out: Path) -> None:
    """``area_report.csv`` (zone, class, hectares) and ``area_report.md`` (zone × class table) in ``out``."""
    area = area_ha(records)
    classes = sorted({c for v in area.values() for c in v})
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["zone", "class", "hectares"])
    for zone, values in area.items():
        for name, ha in values.items():
            writer.writerow([zone, name, f"{ha:.4f}"])
    atomic_write_text(out / REPORT_CSV, buf.getvalue())
    tiles = {z: sum(1 for r in records if r.status in ("ok", "skipped") and (r.zone or NO_ZONE) == z)
             for z in area}
    lines = ["# Area by climate zone and class (hectares)", ""]
    if not area:
        lines.append("No tile was mapped.")
    else:
        lines.append("| zone | tiles | " + " | ".join(classes) + " | total |")
        lines.append("|---|---:|" + "---:|" * (len(classes) + 1))
        for zone, values in area.items():
            cells = [f"{values.get(c, 0.0):,.2f}" for c in classes]
            lines.append(f"| {zone} | {tiles[zone]} | " + " | ".join(cells) + f" | {sum(values.values()):,.2f} |")
        col = [sum(v.get(c, 0.0) for v in area.values()) for c in classes]
        lines.append(f"| **all** | {sum(tiles.values())} | " + " | ".join(f"{x:,.2f}" for x in col)
                     + f" | {sum(col):,.2f} |")
    failed = [r for r in records if r.status == "failed"]
    if failed:
        lines += ["", f"{len(failed)} tile(s) failed:", ""]
        lines += [f"- `{r.id}`: {r.reason}" for r in failed]
    atomic_write_text(out / REPORT_MD, "\n".join(lines) + "\n")


def exit_code(summary: dict[str, Any]) -> int:
    """0 when every tile is done (ok or skipped), 3 when any tile failed."""
    return 3 if any(t["status"] != "ok" and t["status"] != "skipped" for t in summary["tiles"]) else 0


def format_text(summary: dict[str, Any]) -> str:
    """A few human-readable lines for the CLI without ``--json``."""
    c = summary["counts"]
    n_labels = summary.get("label_files_skipped") or 0
    lines = [f"{len(summary['tiles'])} tiles: {c['ok']} ok, {c['skipped']} skipped, {c['failed']} failed "
             f"in {summary['seconds']:.1f} s"
             + (f" ({summary['windows_per_s']:.2f} windows/s)" if summary.get("windows_per_s") else "")
             + (f" on {summary['device']}, backend {summary['backend']}" if summary.get("backend") else "")]
    if n_labels:
        lines.append(f"  {n_labels} label/mask file(s) not mapped (e.g. *_label.tif, masks written by metaseg): "
                     "they are not imagery")
    for t in summary["tiles"]:
        if t["status"] == "failed":
            lines.append(f"  failed {t['path']}: {t['reason']}")
    lines.append(f"masks: {Path(summary['out']) / MASKS_DIR}  polygons: {summary['polygons']} -> {summary['vector']}")
    lines.append(f"summary: {Path(summary['out']) / SUMMARY_NAME}  report: {summary['report']['markdown']}")
    for zone, values in summary["area_ha"].items():
        top = sorted(values.items(), key=lambda kv: -kv[1])[:4]
        lines.append(f"  {zone}: " + ", ".join(f"{n} {ha:,.1f} ha" for n, ha in top))
    return "\n".join(lines)


