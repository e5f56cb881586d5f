"""Presentation of a benchmark result: the aligned table of `metaseg bench` without `--json`."""

from __future__ import annotations

import math
from typing import Any

# --------------------------------------------------------------------------------- presentation
_ROWS = (
    ("metasegnet_ms", "MetaSegNet forward (ms)"),
    ("baseline_ms", "baseline forward (ms)"),
    ("ratio", "ratio MetaSegNet / baseline"),
    ("both_ms", "both models (ms)"),
    ("text_encode_ms", "text encoding, cold (ms)"),
    ("text_cached_ms", "text encoding, cached (ms)"),
    ("text_speedup", "cache speed-up (x)"),
    ("tiles_per_s", "MetaSegNet tiles/s"),
    ("mpix_per_s", "MetaSegNet megapixels/s"),
    ("peak_mem_mb", "peak memory (MiB)"),
    ("achieved_tflops", "MetaSegNet achieved TFLOP/s"),
    ("mfu", "fraction of peak"),
)


def format_table(result: dict[str, Any]) -> str:
    """Human-readable aligned table of a :func:`run_benchmark` result."""
    gpu = f", {result['gpu']}" if result.get("gpu") else ""
    lines = [
        f"bench {result.get('pair')} pair on {result['device']}{gpu}: batch {result['batch']}×{result['size']}², "
        f"{result.get('precision')}, {result.get('threads')} threads, torch {result.get('torch')}, "
        f"median of {result.get('repeats')}",
    ]
    rows: list[tuple[str, str]] = []
    for key, label in _ROWS:
        if result.get(key) is not None:
            rows.append((label, _fmt(result[key])))
    if result.get("gflops_per_image"):
        g = result["gflops_per_image"]
        rows.append(("GFLOPs per image (meta / base)", f"{_fmt(g['metasegnet'])} / {_fmt(g['baseline'])}"))
    for backend, times in (result.get("backends") or {}).items():
        agree = (result.get("agreement") or {}).get(backend, {})
        speed = (result.get("backend_speedup") or {}).get(backend, {})
        rows.append((f"backend {backend} meta / base (ms)",
                     f"{_fmt(times['metasegnet_ms'])} / {_fmt(times['baseline_ms'])}  "
                     f"[pair x{_fmt(speed.get('pair'))} vs torch, agreement {_fmt(agree.get('metasegnet'))} / "
                     f"{_fmt(agree.get('baseline'))}]"))
    for key, ms in (result.get("sliding") or {}).items():
        win = result.get("sliding_windows", {}).get(key)
        mem = result.get("sliding_peak_mem_mb", {}).get(key)
        rows.append((f"sliding {key}² (ms)", f"{_fmt(ms)}  [{win} windows, peak {_fmt(mem)} MiB]"))
    if result.get("sliding_ratio") is not None:
        rows.append(("sliding time ratio (largest/smallest)",
                     f"{_fmt(result['sliding_ratio'])}  (area x{_fmt(result['sliding_area_ratio'])}, "
                     f"windows x{_fmt(result['sliding_window_ratio'])})"))
    width = max(len(label) for label, _ in rows)
    lines += [f"  {label.ljust(width)}  {value}" for label, value in rows]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if math.isfinite(value) and abs(value) >= 100:
            return f"{value:,.1f}"
        return f"{value:.4g}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)


