"""Measuring tools of the benchmark: machine facts, memory meters, timers and precision contexts."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any


# --------------------------------------------------------------------------------- machine facts
def cpu_model_name() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return None
    match = re.search(rf"^{key}:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def peak_rss_mb() -> float | None:
    """Peak resident set size of this process in MiB (``VmHWM``; ``ru_maxrss`` as a fallback)."""
    kb = _status_kb("VmHWM")
    if kb is None:
        try:
            import resource

            kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
        except (ImportError, OSError):
            return None
    return kb / 1024.0


def current_rss_mb() -> float | None:
    """Current resident set size in MiB (``VmRSS``)."""
    kb = _status_kb("VmRSS")
    return None if kb is None else kb / 1024.0


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux ``clear_refs`` value 5). True when it worked."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


class MemoryMeter:
    """Peak memory of a section: CUDA max allocated, or the process's peak RSS on CPU."""

    def __init__(self, device: Any):
        self.device = device
        self.resettable = True

    def reset(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.resettable = reset_peak_rss() and self.resettable

    def peak_mb(self) -> float | None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return peak_rss_mb()


# --------------------------------------------------------------------------------- timing
def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], device: Any) -> float:
    """Wall time of one call in ms (device synchronised before and after)."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return (time.perf_counter() - start) * 1e3


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def sig(value: float, digits: int = 6) -> float:
    """``value`` rounded to ``digits`` significant digits (keeps tiny and huge figures exact enough)."""
    return float(f"{value:.{digits}g}")


def spread(values: Sequence[float]) -> dict[str, float]:
    return {"min": sig(min(values)), "max": sig(max(values)), "n": len(values)}


def precision_dtype(precision: str, device: Any):
    import torch

    from metaseg.device import autocast_dtype

    if precision == "auto":
        return autocast_dtype(device)
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def autocast(device: Any, dtype: Any):
    import torch

    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def sdpa_context(backend: str):
    if backend == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    chosen = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
              "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}[backend]
    return sdpa_kernel([chosen])


def compile_parts(model: Any, mode: str | None) -> None:
    """torch.compile the tensor-only parts (encoder, decoder, head); the text cache stays eager."""
    import torch

    kwargs = {} if mode is None else {"mode": mode}
    model.image_encoder = torch.compile(model.image_encoder, **kwargs)
    model.head = torch.compile(model.head, **kwargs)
    if getattr(model, "decoder", None) is not None:
        model.decoder = torch.compile(model.decoder, **kwargs)


def count_flops(model: Any, images: Any, text: Any, device: Any, dtype: Any) -> dict[str, int]:
    """FLOPs of one forward, total and per top-level component (FlopCounterMode).

    Returns:
        ``{"total": n, "image_encoder": n, "neck": n, "decoder": n, "head": n, "other": n}``
        (multiply-adds count as 2 FLOPs, torch's convention).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), autocast(device, dtype), counter:
        model(images, text=text) if text is not None else model(images)
    per_module = counter.get_flop_counts()
    total = int(counter.get_total_flops())
    out: dict[str, int] = {"total": total}
    prefix = type(model).__name__ + "."
    named = 0
    for part in ("image_encoder", "neck", "decoder", "head"):
        counts = per_module.get(prefix + part, {})
        out[part] = int(sum(counts.values()))
        named += out[part]
    out["other"] = total - named
    return out


# --------------------------------------------------------------------------------- main entry

def loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


