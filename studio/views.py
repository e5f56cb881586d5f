"""Small display helpers: HTML snippets (all user/file text escaped) and display-size images."""

from __future__ import annotations

import html
from typing import Any

import numpy as np

SOURCE_LABELS = {
    "geotiff": "GeoTIFF georeference",
    "exif": "EXIF GPS tags",
    "map": "map click",
    "typed": "typed coordinates",
    "none": "no location in the file",
}

#: Longest side of images sent to the browser (masks are downsampled by nearest neighbour).
DISPLAY_MAX_SIDE = 1536
#: pictures of smaller tiles are enlarged (whole pixels, nearest) until the longest side reaches this
DISPLAY_MIN_SIDE = 256


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def swatch(color: str | None, size: int = 14) -> str:
    color = color if isinstance(color, str) and color.startswith("#") and len(color) == 7 else "#999999"
    return (
        f'<span class="ms-swatch" style="display:inline-block;width:{size}px;height:{size}px;'
        f'background:{esc(color)};border:1px solid #555;border-radius:3px;vertical-align:middle"></span>'
    )


def location_html(loc: dict[str, Any] | None, note: str | None = None) -> str:
    """The Locate panel: coordinates, where they came from, the file facts and the climate zone."""
    if not loc:
        body = (
            '<div class="ms-loc ms-empty">No location yet: upload a tile, click the map or type '
            "coordinates. Without a location the generic prompt is used."
            + (f'<div class="ms-note">{esc(note)}</div>' if note else "") + "</div>"
        )
        return body
    parts = []
    src = str(loc.get("source") or "none")
    if loc.get("lat") is not None and loc.get("lon") is not None:
        parts.append(
            f'<div class="ms-coords"><b>{float(loc["lat"]):.5f}, {float(loc["lon"]):.5f}</b> '
            f'<span class="ms-source" data-source="{esc(src)}">from {esc(SOURCE_LABELS.get(src, src))}</span></div>'
        )
    else:
        parts.append(
            f'<div class="ms-coords ms-warn" data-source="{esc(src)}">{esc(SOURCE_LABELS.get(src, src))}: click '
            "the map or type coordinates to choose the climate zone (the generic prompt is used until then).</div>"
        )
    if loc.get("width"):
        facts = f'{esc(loc["width"])}×{esc(loc["height"])} px, {esc(loc["bands"])} band(s), {esc(loc["dtype"])}'
        if loc.get("crs"):
            facts += f", {esc(loc['crs'])}"
        if isinstance(loc.get("gsd_m"), (int, float)) and loc["gsd_m"] > 0:
            facts += f', <span class="ms-gsd" data-gsd="{float(loc["gsd_m"]):.4f}">{float(loc["gsd_m"]):.3g} m/px</span>'
        parts.append(f'<div class="ms-file">{facts}</div>')
    zone = loc.get("zone")
    if zone and zone.get("code"):
        parts.append(
            f'<div class="ms-zone" data-zone="{esc(zone["code"])}">{swatch(zone.get("color"))} '
            f'<b>{esc(zone["code"])}</b> — {esc(zone.get("name"))} <i>({esc(zone.get("group"))})</i></div>'
        )
        desc = _zone_description(zone["code"])
        if desc:
            parts.append(f'<div class="ms-zone-desc">{esc(desc)}</div>')
    elif zone and zone.get("reason") == "ocean":
        parts.append(
            '<div class="ms-zone ms-warn" data-zone="ocean">Ocean or no climate data here: the generic '
            "prompt is used.</div>"
        )
    if note:
        parts.append(f'<div class="ms-note">{esc(note)}</div>')
    return '<div class="ms-loc">' + "".join(parts) + "</div>"


def _zone_description(code: str) -> str | None:
    try:
        from metaseg.climate import ZONES

        return getattr(ZONES.get(code), "description", None)
    except ImportError:  # pragma: no cover
        return None


def koppen_legend_html() -> str:
    """All 30 Köppen-Geiger zones with their legend colours (name on hover), grouped like the legend."""
    from metaseg.climate import ZONES

    items = "".join(
        f'<span class="ms-legend-item" title="{esc(z.name)}">{swatch(z.color)} {esc(z.code)}</span>'
        for z in ZONES.values()
    )
    return f'<div class="ms-legend ms-koppen">{items}</div>'


def prompt_info_html(record: Any, zone_label: str, tokens: int | None = None, budget: int = 250) -> str:
    """Version/source/token line under the prompt editor."""
    if record is None:
        return ""
    tokens = record.token_count if tokens is None else tokens
    over = tokens > budget
    cls = "ms-tokens ms-over" if over else "ms-tokens"
    return (
        f'<div class="ms-prompt-info">Prompt for <b>{esc(zone_label)}</b> / {esc(record.class_set)} — '
        f'version <b data-version="{int(record.version)}">v{int(record.version)}</b> (id {int(record.id)}), '
        f"source <code>{esc(record.source)}</code>, saved {esc(record.created_at)}. "
        f'<span class="{cls}">{int(tokens)} / {budget} tokens'
        f'{" — over budget: the encoder truncates the rest" if over else ""}</span></div>'
    )


def token_html(tokens: int, budget: int = 250) -> str:
    over = tokens > budget
    return (
        f'<span class="ms-tokens{" ms-over" if over else ""}">Text in the editor: {int(tokens)} / {budget} tokens'
        f'{" — over budget: the encoder truncates the rest" if over else ""}</span>'
    )


def legend_items_html(entries: list[tuple[str, tuple[int, int, int]]]) -> str:
    items = "".join(
        f'<span class="ms-legend-item">{swatch("#{:02X}{:02X}{:02X}".format(*tuple(int(c) for c in col)))} {esc(name)}</span>'
        for name, col in entries
    )
    return f'<div class="ms-legend">{items}</div>'


def imagery_credit(attribution: str) -> str:
    """The credit line under the fetch button: ``Imagery: <credit>`` unless the credit already
    says so (the default credit of a custom server is ``Imagery: <host>``)."""
    text = " ".join(str(attribution or "").split())
    return text if text.lower().startswith("imagery") else f"Imagery: {text}"


def display_image(img: np.ndarray, max_side: int = DISPLAY_MAX_SIDE, min_side: int = DISPLAY_MIN_SIDE) -> np.ndarray:
    """An image or mask as shown: downsampled (nearest, integer stride) so its longest side fits
    ``max_side``, or enlarged by a whole factor (each pixel a visible block) when its longest side
    is under ``min_side`` — a 41×41 tile is not a speck. Same shape for a tile and its masks."""
    img = np.asarray(img)
    h, w = img.shape[:2]
    if 0 < max(h, w) < min_side:
        k = int(np.ceil(min_side / max(h, w)))
        return np.repeat(np.repeat(img, k, axis=0), k, axis=1)
    step = int(np.ceil(max(h, w) / max_side)) if max(h, w) > max_side else 1
    return img[::step, ::step] if step > 1 else img


def metrics_html(rev: dict[str, Any], gt_source: str | None) -> str:
    def pct(x: Any) -> str:
        return "—" if x is None else f"{100 * float(x):.1f}"

    a, b = rev["metasegnet"], rev["baseline"]
    rows = "".join(
        f"<tr><td>{name}</td><td>{pct(m['miou'])}</td><td>{pct(m['oa'])}</td><td>{pct(m['mf1'])}</td></tr>"
        for name, m in (("MetaSegNet", a), ("Baseline", b))
    )
    d = None if a["miou"] is None or b["miou"] is None else a["miou"] - b["miou"]
    delta = "—" if d is None else f"{100 * d:+.1f}"
    return (
        f'<div class="ms-metrics"><table><tr><th>model</th><th>mIoU %</th><th>OA %</th><th>mF1 %</th></tr>'
        f"{rows}</table><div>ΔmIoU (MetaSegNet − baseline): <b>{delta}</b> points. "
        f"Ground truth: {esc(gt_source or 'uploaded label')}.</div></div>"
    )


def iou_chart(rev: dict[str, Any], class_names: list[str] | tuple[str, ...]) -> np.ndarray:
    """Grouped bar chart of per-class IoU (MetaSegNet vs baseline) with ΔIoU labels, as an RGB array."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(class_names)
    a = [100 * (rev["metasegnet"]["per_class_iou"][n] or 0.0) for n in names]
    b = [100 * (rev["baseline"]["per_class_iou"][n] or 0.0) for n in names]
    x = np.arange(len(names))
    fig = Figure(figsize=(7.5, 3.4), dpi=110)
    ax = fig.add_subplot(111)
    ax.bar(x - 0.2, a, 0.4, label="MetaSegNet", color="#1e6eff")
    ax.bar(x + 0.2, b, 0.4, label="baseline", color="#ff9600")
    for i, n in enumerate(names):
        d = rev["delta_iou"].get(n)
        if d is not None:
            ax.annotate(f"{100 * d:+.1f}", (x[i], max(a[i], b[i]) + 1.5), ha="center", fontsize=7,
                        color="#1a7f37" if d >= 0 else "#c0392b")
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("IoU %")
    ax.set_ylim(0, min(110, max([*a, *b, 10]) + 12))
    ax.legend(fontsize=8, loc="upper right", frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title("Per-class IoU (labels: ΔIoU, MetaSegNet − baseline)", fontsize=9)
    fig.tight_layout()
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _pct(x: Any) -> float | None:
    return None if x is None else round(100 * float(x), 2)


def iou_table(rev: dict[str, Any], class_names: list[str] | tuple[str, ...]):
    """Per-class IoU of both models and ΔIoU, in percent (pandas DataFrame)."""
    import pandas as pd

    return pd.DataFrame(
        [[n, _pct(rev["metasegnet"]["per_class_iou"][n]), _pct(rev["baseline"]["per_class_iou"][n]),
          _pct(rev["delta_iou"][n])] for n in class_names],
        columns=["class", "MetaSegNet IoU %", "baseline IoU %", "ΔIoU"],
    )


def compare_table(rows: list[dict[str, Any]]):
    """Runs on one tile (``PromptStore.compare_prompt_versions`` rows) as a DataFrame, newest first."""
    import pandas as pd

    return pd.DataFrame(
        [[r["run_id"], str(r["created_at"])[:19], r["model_role"], r["prompt_version"], r["prompt_source"],
          r["zone"], _pct(r["miou"]), _pct(r["delta_miou"])] for r in rows],
        columns=["run", "when", "model", "prompt v", "prompt source", "zone", "mIoU %", "ΔmIoU"],
    )


def labels_table(rows: list[dict[str, Any]]):
    """Saved labels (``PromptStore.labels`` rows) as a DataFrame; only file names are shown."""
    from pathlib import Path

    import pandas as pd

    return pd.DataFrame(
        [[r["id"], r["class_set"], Path(r["mask_path"]).name, str(r["created_at"])[:19]] for r in rows],
        columns=["id", "class set", "file", "saved"],
    )
