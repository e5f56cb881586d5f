"""glibc malloc thresholds of a CPU predictor (issue 14's sliding-window scaling): :func:`tune_malloc`."""

from __future__ import annotations

#: glibc malloc settings applied once per process by a CPU predictor (see :func:`tune_malloc`).
MMAP_THRESHOLD = 64 << 20
TRIM_THRESHOLD = 256 << 20
_MALLOC_TUNED: bool | None = None


def tune_malloc() -> bool:
    """Fix glibc's malloc thresholds for this process (once): mmap ≥ 64 MiB, trim above 256 MiB.

    Why (issue 14's sliding-window scaling, measured): glibc adapts its mmap threshold to the
    sizes freed so far and returns the heap top to the OS above twice that. A window's forward
    pass allocates and frees tens of MB of activations; whether they come back as reused heap
    memory or as fresh, page-faulted (zeroed) pages depended on what the process had freed
    before — e.g. the band accumulator, whose size grows with the tile width. So the cost per
    window depended on the tile size and the history: ``bench --sliding-repeats 5`` at 2 threads
    gave 109.5 vs 97.8 ms per window (2048² vs 4096², ratio 3.57, 21 s of kernel time for page
    faults). With fixed thresholds: 77.6 vs 78.3 ms per window, ratio 4.04, and every window
    ~25 % faster. Fixed thresholds also disable glibc's dynamic adjustment, so the behaviour no
    longer depends on history. The cost: up to 256 MiB of freed heap stay mapped. Applied by the
    first sliding-window prediction of a torch-backend CPU predictor only: the same setting made
    ONNX Runtime ~25 % slower (its arena prefers fresh mmap-ed memory), so ONNX predictors never
    set it. ``METASEG_MALLOPT=0`` leaves malloc alone; no-op where ``mallopt`` is not available.

    Returns:
        True when the thresholds are set (now or earlier in this process).
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED is not None:
        return _MALLOC_TUNED
    import os
    import sys

    _MALLOC_TUNED = False
    if sys.platform.startswith("linux") and os.environ.get("METASEG_MALLOPT", "1") != "0":
        try:
            import ctypes

            libc = ctypes.CDLL(None)
            m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
            _MALLOC_TUNED = bool(libc.mallopt(m_mmap_threshold, MMAP_THRESHOLD)) and bool(
                libc.mallopt(m_trim_threshold, TRIM_THRESHOLD))
        except (OSError, AttributeError):  # not glibc
            _MALLOC_TUNED = False
    return _MALLOC_TUNED
