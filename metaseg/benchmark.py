"""Speed and memory benchmark of a MetaSegNet / baseline pair (library side of ``metaseg bench``).

Everything is measured in ONE process and one call of :func:`run_benchmark`, so the ratios
compare the two models under the same load, threads and allocator state:

1. **Models.** ``metasegnet_<pair>`` and ``baseline_<pair>`` are built with :func:`create_model`
   and random image-encoder weights (``pretrained="none"``: timing does not depend on the
   values, and nothing is downloaded). Both get the same seed, device, precision and memory
   format.
2. **Text encoding.** ``text_encode_ms``: one prompt through the frozen text encoder with its
   cache cleared first (cold); ``text_cached_ms``: the same call when the features are cached
   (a dictionary hit). Medians over the repeats.
3. **Forward latency.** After ``warmup`` calls of each model, the two models are timed
   *interleaved* (MetaSegNet, baseline, baseline, MetaSegNet, ...), so a burst of load from
   other processes hits both; each figure is the median over ``repeats``. MetaSegNet gets its
   prompt through ``encode_text`` (a cache hit) inside the timed call, as
   :class:`metaseg.inference.Predictor` does. ``ratio = metasegnet_ms / baseline_ms``.
4. **Throughput** of MetaSegNet: ``tiles_per_s = batch / latency``, ``mpix_per_s`` likewise in
   megapixels.
5. **Peak memory**: on CPU the peak resident set size (``VmHWM`` of ``/proc/self/status``, reset
   through ``/proc/self/clear_refs`` before each measured section where the kernel allows it;
   otherwise the process's lifetime peak); on CUDA ``torch.cuda.max_memory_allocated``.
6. **Sliding window.** MetaSegNet through :class:`metaseg.inference.Predictor` (window = the
   benchmark size, the predictor's default overlap 0.25) on random ``N×N`` tiles, by default
   N = 2048 and 4096; time, number of windows, peak memory and the band accumulator's size per N.
   With several repeats the sizes are visited in A B B A order so that load drift cancels in
   their ratio. Note that the window count, not the area, sets the work: at overlap 0.25 and a
   512 window a 2048² tile takes 5×5 windows and a 4096² tile 10×10 (ratio 4.00, see
   :func:`metaseg.inference.window_starts`). ``sliding_cpu_ms_per_window`` is the process CPU
   time per window (median over repeats): unlike wall time it does not grow when other
   processes load the machine, so it shows whether the work per window depends on the tile size.
7. **Backends** (``backends``, e.g. ``("torch", "onnx", "onnx-int8")``; CPU only): the pair with
   its *shipped* weights (random weights for pairs without them) through one
   :class:`metaseg.inference.Predictor` per backend and model, timed at the same input through the
   predictor's model seam (``Predictor._logits``: what every window costs), interleaved across
   backends and models so that load bursts hit all of them; medians of ``repeats`` go into
   ``backends`` (backend → ``metasegnet_ms``, ``baseline_ms``). ``agreement`` (backend → model →
   fraction of pixels whose class equals torch's) is measured with :meth:`Predictor.predict` on
   the tiles shipped in ``static/examples/`` (MetaSegNet with each tile's zone prompt).
8. **FLOPs** (optional): ``torch.utils.flop_counter.FlopCounterMode`` over one eager forward of
   each model at the benchmark batch, split by component; with a peak figure
   (``peak_tflops``) the achieved fraction of peak (``mfu``) of MetaSegNet.

On CUDA every timed region is closed by ``torch.cuda.synchronize()``. Precision ``"auto"``
follows :func:`metaseg.device.autocast_dtype` (bf16 on capable GPUs, fp32 on CPU), like the
predictor.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import platform
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from metaseg.errors import ConfigError, UnknownNameError

log = logging.getLogger(__name__)

#: Model pairs: name → (MetaSegNet variant, baseline variant).
PAIRS: dict[str, tuple[str, str]] = {
    "demo": ("metasegnet_demo", "baseline_demo"),
    "swin_b": ("metasegnet_swin_b", "baseline_swin_b"),
    "swin_t": ("metasegnet_swin_t", "baseline_swin_t"),
}
DEFAULT_SLIDING_SIZES = (2048, 4096)
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SDPA_BACKENDS = ("auto", "flash", "efficient", "cudnn", "math")

#: A climate prompt written for the benchmark, about as long as the prompt store's climate templates
#: (157-181 tokens of the 250-token budget; this one has 166 with the MiniLM tokenizer).
DEFAULT_PROMPT = (
    "Humid subtropical climate (Koppen Cfa): hot, wet summers and mild winters. Bareland is rare: "
    "exposed soil on construction sites, dry riverbeds and freshly ploughed fields, brown to ochre. "
    "Rangeland shows as grass and shrubs along embankments and field margins. Developed space "
    "covers yards, parking lots and plazas of concrete and asphalt around buildings, grey and flat. "
    "Roads form bright grey lines and curves between fields. Trees grow as evergreen and deciduous "
    "broadleaf groves, bamboo stands and street rows with dark rounded crowns. Water appears as "
    "rivers, canals, ponds and fish farms, dark blue to brown-green with sharp straight banks. "
    "Agriculture land is dominated by flooded rice paddies, tea terraces and vegetable plots in "
    "small rectangular parcels. Buildings are dense village houses with tiled roofs and large "
    "factory halls."
)


@dataclass
class BenchOptions:
    """What to measure and how (``python -m metaseg bench`` maps its flags onto this).

    Attributes:
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (CUDA without a GPU raises ConfigError).
        pair: key of :data:`PAIRS`.
        size: square input side in px; ``None`` = the pair's ``image_size``.
        batch: images per forward pass (also the predictor's windows per pass).
        repeats: timed repetitions per measurement (median reported).
        warmup: untimed calls of each model before timing.
        sliding_sizes: tile sides for the sliding-window measurement (empty = skip).
        sliding_repeats: timed sliding-window runs per size (median reported; sizes alternate).
        overlap: sliding-window overlap passed to the predictor (its default is 0.25).
        threads: ``torch.set_num_threads`` value (``None`` = leave torch's default).
        precision: ``auto`` (bf16 autocast on capable GPUs, fp32 on CPU), ``fp32``, ``bf16``, ``fp16``.
        channels_last: run models and inputs in channels-last memory format (the predictor's default).
        compile: ``torch.compile`` the image encoder, CAF decoder and head of both models.
        compile_mode: ``mode`` passed to ``torch.compile`` (``None`` = default).
        sdpa: restrict ``scaled_dot_product_attention`` to one backend (``auto`` = torch picks).
        flops: count FLOPs of one forward of each model (FlopCounterMode).
        peak_tflops: device peak (TFLOP/s) for the achieved-fraction figure (``mfu``).
        text_encoder: override of the MetaSegNet text encoder (local folder, hub id or ``minilm``).
        prompt: the prompt MetaSegNet is timed with.
        seed: torch seed for weights and inputs.
        backends: predictor backends to time side by side (``torch`` first; empty = skip).
    """

    device: str = "cpu"
    pair: str = "demo"
    size: int | None = None
    batch: int = 1
    repeats: int = 5
    warmup: int = 1
    sliding_sizes: tuple[int, ...] = DEFAULT_SLIDING_SIZES
    sliding_repeats: int = 1
    overlap: float = 0.25
    threads: int | None = None
    precision: str = "auto"
    channels_last: bool = True
    compile: bool = False
    compile_mode: str | None = None
    sdpa: str = "auto"
    flops: bool = True
    peak_tflops: float | None = None
    text_encoder: str | None = None
    prompt: str = DEFAULT_PROMPT
    seed: int = 0
    backends: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise :class:`ConfigError` / :class:`UnknownNameError` for impossible settings."""
        if self.pair not in PAIRS:
            raise UnknownNameError(f"unknown pair {self.pair!r}; valid: {', '.join(PAIRS)}")
        for key in ("batch", "repeats", "sliding_repeats"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{key} must be a positive integer, got {value!r}")
        if not isinstance(self.warmup, int) or self.warmup < 0:
            raise ConfigError(f"warmup must be >= 0, got {self.warmup!r}")
        if self.size is not None and (not isinstance(self.size, int) or self.size < 16):
            raise ConfigError(f"size must be an integer >= 16, got {self.size!r}")
        if any((not isinstance(s, int)) or s < 16 for s in self.sliding_sizes):
            raise ConfigError(f"sliding sizes must be integers >= 16, got {list(self.sliding_sizes)}")
        if not 0.0 <= self.overlap <= 0.9:
            raise ConfigError(f"overlap must be in [0, 0.9], got {self.overlap}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.sdpa not in SDPA_BACKENDS:
            raise ConfigError(f"sdpa must be one of {', '.join(SDPA_BACKENDS)}, got {self.sdpa!r}")
        if self.backends:
            from metaseg.backends import check_backend

            for name in self.backends:
                if check_backend(name) == "auto":
                    raise ConfigError("bench times concrete backends: torch, onnx, onnx-int8 (not auto)")
            if any(b != "torch" for b in self.backends) and not str(self.device).startswith("cpu"):
                raise ConfigError("the ONNX backends run on CPU: use --device cpu")
        if self.peak_tflops is not None and not self.peak_tflops > 0:
            raise ConfigError(f"peak TFLOP/s must be > 0, got {self.peak_tflops}")


def parse_sizes(text: str) -> tuple[int, ...]:
    """``"2048,4096"`` → ``(2048, 4096)``; ``""``/``"none"`` → ``()``.

    Raises:
        ConfigError: not a comma-separated list of integers.
    """
    text = str(text).strip()
    if text.lower() in ("", "none", "0"):
        return ()
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"sliding sizes must be comma-separated integers, got {text!r}") from None
    return sizes


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


class _MemoryMeter:
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
def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], device: Any) -> float:
    """Wall time of one call in ms (device synchronised before and after)."""
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return (time.perf_counter() - start) * 1e3


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def _sig(value: float, digits: int = 6) -> float:
    """``value`` rounded to ``digits`` significant digits (keeps tiny and huge figures exact enough)."""
    return float(f"{value:.{digits}g}")


def _spread(values: Sequence[float]) -> dict[str, float]:
    return {"min": _sig(min(values)), "max": _sig(max(values)), "n": len(values)}


def _precision_dtype(precision: str, device: Any):
    import torch

    from metaseg.device import autocast_dtype

    if precision == "auto":
        return autocast_dtype(device)
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _autocast(device: Any, dtype: Any):
    import torch

    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _sdpa_context(backend: str):
    if backend == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    chosen = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
              "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}[backend]
    return sdpa_kernel([chosen])


def _compile_parts(model: Any, mode: str | None) -> None:
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
    with torch.inference_mode(), _autocast(device, dtype), counter:
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
def run_benchmark(options: BenchOptions, progress: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """Measure a MetaSegNet/baseline pair (see the module docstring).

    Args:
        options: what to measure.
        progress: called with a short message before each phase (the CLI logs them).

    Returns:
        A JSON-serialisable dict with the keys of the ``bench --json`` contract
        (``device, size, batch, metasegnet_ms, baseline_ms, ratio, text_encode_ms,
        text_cached_ms, tiles_per_s, mpix_per_s, peak_mem_mb, sliding``) and extras.

    Raises:
        ConfigError: bad options, or CUDA asked for without a GPU.
    """
    options.validate()
    import torch

    threads_before = torch.get_num_threads()
    try:
        return _run(options, progress or (lambda msg: log.info("%s", msg)))
    finally:
        if torch.get_num_threads() != threads_before:  # --threads must not leak into the caller
            torch.set_num_threads(threads_before)


def _run(options: BenchOptions, say: Callable[[str], Any]) -> dict[str, Any]:
    import torch

    from metaseg.device import pick_device

    device = pick_device(options.device)  # ConfigError when CUDA is missing
    if options.threads is not None:
        torch.set_num_threads(int(options.threads))
    dtype = _precision_dtype(options.precision, device)
    if device.type == "cpu" and dtype is torch.float16:
        raise ConfigError("fp16 autocast is for CUDA; use --precision fp32 or bf16 on CPU")
    meter = _MemoryMeter(device)

    # 1. models ---------------------------------------------------------------------------
    from metaseg.models.registry import create_model, variant_config

    meta_name, base_name = PAIRS[options.pair]
    size = int(options.size or variant_config(meta_name).image_size)
    say(f"building {meta_name} and {base_name}")
    overrides: dict[str, Any] = {"pretrained": "none"}
    meta_overrides = dict(overrides)
    if options.text_encoder:
        meta_overrides["text_encoder"] = options.text_encoder
    torch.manual_seed(options.seed)
    meta = create_model(meta_name, **meta_overrides).to(device).eval()
    torch.manual_seed(options.seed)
    base = create_model(base_name, **overrides).to(device).eval()
    if options.channels_last:
        meta = meta.to(memory_format=torch.channels_last)
        base = base.to(memory_format=torch.channels_last)
    flops_models = (meta, base)  # eager references for the FLOP count
    gen = torch.Generator().manual_seed(options.seed)
    images = torch.rand(options.batch, 3, size, size, generator=gen).to(device)
    if options.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    prompt = options.prompt

    # 2. text encoding: cold vs cached --------------------------------------------------------
    say("timing text encoding (cold vs cached)")
    encoder = meta.text_encoder
    with torch.inference_mode():
        meta.encode_text([prompt])  # first call pays one-off lazy initialisation
        cold: list[float] = []
        for _ in range(options.repeats):
            encoder.clear_cache()
            cold.append(time_call(lambda: meta.encode_text([prompt]), device))
        cached = [time_call(lambda: meta.encode_text([prompt]), device) for _ in range(max(options.repeats, 20))]
    n_tokens = int(meta.encode_text([prompt]).mask.sum())

    # 3. forward latency, interleaved ---------------------------------------------------------
    flops: dict[str, dict[str, int]] | None = None
    if options.flops:
        say("counting FLOPs (one eager forward per model)")
        with _sdpa_context(options.sdpa):
            feats = meta.encode_text([prompt])
            flops = {"metasegnet": count_flops(flops_models[0], images, feats, device, dtype),
                     "baseline": count_flops(flops_models[1], images, None, device, dtype)}
    if options.compile:
        say("compiling (torch.compile)")
        _compile_parts(meta, options.compile_mode)
        _compile_parts(base, options.compile_mode)

    def run_meta() -> Any:
        return meta(images, text=meta.encode_text([prompt])).logits

    def run_base() -> Any:
        return base(images).logits

    say(f"timing forward passes at {options.batch}×3×{size}×{size} ({options.repeats} repeats)")
    meter.reset()
    meta_ms: list[float] = []
    base_ms: list[float] = []
    with torch.inference_mode(), _autocast(device, dtype), _sdpa_context(options.sdpa):
        for _ in range(options.warmup):
            time_call(run_meta, device)
            time_call(run_base, device)
        for r in range(options.repeats):
            order = ((run_meta, meta_ms), (run_base, base_ms))
            for fn, sink in (order if r % 2 == 0 else order[::-1]):
                sink.append(time_call(fn, device))
    peak_mem = meter.peak_mb()

    m_ms, b_ms = median(meta_ms), median(base_ms)
    result: dict[str, Any] = {
        "device": str(device),
        "size": size,
        "batch": options.batch,
        "metasegnet_ms": _sig(m_ms),
        "baseline_ms": _sig(b_ms),
        "ratio": _sig(m_ms / b_ms),
        "text_encode_ms": _sig(median(cold)),
        "text_cached_ms": _sig(median(cached)),
        "tiles_per_s": _sig(options.batch / (m_ms / 1e3)),
        "mpix_per_s": _sig(options.batch * size * size / 1e6 / (m_ms / 1e3)),
        "peak_mem_mb": None if peak_mem is None else round(peak_mem, 1),
        "sliding": {},
    }
    result["both_ms"] = _sig(m_ms + b_ms)
    result["ratio_paired_median"] = _sig(median([a / b for a, b in zip(meta_ms, base_ms, strict=True)]))
    result["text_speedup"] = round(median(cold) / max(median(cached), 1e-9), 1)
    result["text_tokens"] = n_tokens
    result["baseline_tiles_per_s"] = _sig(options.batch / (b_ms / 1e3))
    result["spread"] = {"metasegnet_ms": _spread(meta_ms), "baseline_ms": _spread(base_ms),
                        "text_encode_ms": _spread(cold), "text_cached_ms": _spread(cached),
                        "ratio_per_repeat": _spread([a / b for a, b in zip(meta_ms, base_ms, strict=True)])}

    # 4. FLOPs and fraction of peak -----------------------------------------------------------
    if flops is not None:
        result["flops"] = flops
        result["gflops_per_image"] = {k: round(v["total"] / options.batch / 1e9, 3) for k, v in flops.items()}
        achieved = flops["metasegnet"]["total"] / (m_ms / 1e3) / 1e12
        result["achieved_tflops"] = round(achieved, 3)
        result["baseline_achieved_tflops"] = round(flops["baseline"]["total"] / (b_ms / 1e3) / 1e12, 3)
        if options.peak_tflops:
            result["peak_tflops"] = options.peak_tflops
            result["mfu"] = round(achieved / options.peak_tflops, 4)

    # 5. backends side by side ------------------------------------------------------------------
    if options.backends:
        result.update(_backends(options, device, size, say))
        if flops is not None:
            result["backend_gflops_per_s"] = {
                b: {"metasegnet": round(flops["metasegnet"]["total"] / options.batch / (v["metasegnet_ms"] / 1e3) / 1e9, 1),
                    "baseline": round(flops["baseline"]["total"] / options.batch / (v["baseline_ms"] / 1e3) / 1e9, 1)}
                for b, v in result["backends"].items()}

    # 6. sliding window -----------------------------------------------------------------------
    if options.sliding_sizes:
        result.update(_sliding(meta, device, size, options, meter, say))

    # 6. context ------------------------------------------------------------------------------
    result.update({
        "pair": options.pair,
        "models": [meta_name, base_name],
        "encoder": meta.config.encoder,
        "text_encoder": meta.config.text_encoder,
        "repeats": options.repeats,
        "warmup": options.warmup,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu": cpu_model_name(),
        "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "precision": "fp32" if dtype is None else str(dtype).replace("torch.", ""),
        "channels_last": options.channels_last,
        "compile": options.compile,
        "sdpa": options.sdpa,
        "peak_mem_kind": "cuda_max_allocated" if device.type == "cuda" else (
            "rss_peak_section" if meter.resettable else "rss_peak_process"),
        "loadavg": _loadavg(),
    })
    return result


def _sliding(meta: Any, device: Any, size: int, options: BenchOptions, meter: _MemoryMeter,
             say: Callable[[str], Any]) -> dict[str, Any]:
    """Sliding-window time/memory of MetaSegNet through the Predictor for each tile size."""
    import numpy as np

    from metaseg.inference import Predictor

    predictor = Predictor(meta, device, window=size, batch_size=options.batch,
                          channels_last=options.channels_last, fold_bn=True)  # as from_name/from_checkpoint
    rng = np.random.default_rng(options.seed)
    times: dict[str, float] = {}
    windows: dict[str, int] = {}
    mem: dict[str, float | None] = {}
    acc: dict[str, float] = {}
    spreads: dict[str, dict[str, float]] = {}
    before: dict[str, float | None] = {}
    runs: dict[str, list[float]] = {str(n): [] for n in options.sliding_sizes}
    cpu_runs: dict[str, list[float]] = {str(n): [] for n in options.sliding_sizes}
    # Sizes are visited A B ... B A (order reversed on every other repeat) so that a change of
    # machine load between the runs of the small and the large tile does not bias their ratio.
    schedule: list[int] = []
    for r in range(options.sliding_repeats):
        schedule += list(options.sliding_sizes) if r % 2 == 0 else list(options.sliding_sizes)[::-1]
    with _sdpa_context(options.sdpa):
        warm = rng.integers(0, 256, (size + size // 2, size + size // 2, 3), dtype=np.uint8)
        predictor.predict(warm, options.prompt, overlap=options.overlap)  # warm the predictor's paths
        del warm
        for n in schedule:
            key = str(n)
            say(f"sliding window on a {n}×{n} tile (window {size}, overlap {options.overlap})")
            tile = rng.integers(0, 256, (n, n, 3), dtype=np.uint8)
            rss_before = current_rss_mb() if device.type == "cpu" else None
            meter.reset()
            _sync(device)
            start, cpu_start = time.perf_counter(), time.process_time()
            pred = predictor.predict(tile, options.prompt, overlap=options.overlap)
            _sync(device)
            runs[key].append((time.perf_counter() - start) * 1e3)
            cpu_runs[key].append((time.process_time() - cpu_start) * 1e3 / max(int(pred.windows), 1))
            peak = meter.peak_mb()
            if key not in times:  # first run of this size: its memory figures are the clean ones
                times[key] = 0.0
                windows[key] = int(pred.windows)
                acc[key] = round(pred.accumulator_bytes / 2**20, 2)
                mem[key] = None if peak is None else round(peak, 1)
                before[key] = None if rss_before is None else round(rss_before, 1)
            del tile, pred
    for key, values in runs.items():
        times[key] = _sig(median(values))
        spreads[key] = _spread(values)
    out: dict[str, Any] = {
        "sliding": times,
        "sliding_windows": windows,
        "sliding_ms_per_window": {k: _sig(times[k] / max(windows[k], 1)) for k in times},
        # process CPU time per window (all threads): insensitive to other processes' load, so a
        # per-window cost that grows with the tile width shows here even on a busy machine
        "sliding_cpu_ms_per_window": {k: _sig(median(v)) for k, v in cpu_runs.items() if v},
        "sliding_peak_mem_mb": mem,
        "sliding_rss_before_mb": before,
        "sliding_accumulator_mb": acc,
        "sliding_spread": spreads,
        "sliding_window": size,
        "sliding_overlap": options.overlap,
    }
    keys = sorted(times, key=int)
    if len(keys) >= 2:
        lo, hi = keys[0], keys[-1]
        out["sliding_ratio"] = _sig(times[hi] / times[lo], 4)
        out["sliding_area_ratio"] = round((int(hi) / int(lo)) ** 2, 3)
        out["sliding_window_ratio"] = round(windows[hi] / max(windows[lo], 1), 3)
    return out


def _backends(options: BenchOptions, device: Any, size: int, say: Callable[[str], Any]) -> dict[str, Any]:
    """Time the pair through each backend's predictor seam, and their class agreement with torch."""
    import numpy as np
    import torch

    from metaseg.backends import example_tiles, tile_prompt
    from metaseg.checkpoints import demo_checkpoint_path
    from metaseg.errors import CheckpointError
    from metaseg.inference import Predictor
    from metaseg.models.registry import create_model

    names = dict(zip(("metasegnet", "baseline"), PAIRS[options.pair], strict=True))
    backends = ["torch"] + [b for b in dict.fromkeys(options.backends) if b != "torch"]
    preds: dict[str, dict[str, Predictor]] = {b: {} for b in backends}
    weights = "shipped"
    for role, name in names.items():
        try:
            demo_checkpoint_path(name)
            shipped = True
        except (CheckpointError, UnknownNameError):
            shipped, weights = False, "random"
        model = None
        for b in backends:
            say(f"loading {name} with backend {b}" + ("" if b == "torch" else " (exports and verifies on first use)"))
            if shipped:
                preds[b][role] = Predictor.from_name(name, device, batch_size=options.batch, backend=b,
                                                     channels_last=options.channels_last)
            else:
                if model is None:
                    torch.manual_seed(options.seed)
                    model = create_model(name, pretrained="none")
                preds[b][role] = Predictor(model, device, batch_size=options.batch, backend=b,
                                           channels_last=options.channels_last)
    rng = np.random.default_rng(options.seed)
    rgb = rng.integers(0, 256, (options.batch, size, size, 3), dtype=np.uint8)
    prompt = options.prompt
    calls = []
    for b in backends:
        for role in ("metasegnet", "baseline"):
            p = preds[b][role]
            x = p._to_tensor(rgb)
            text = prompt if p.uses_text else None
            if text is not None:
                p.text_features(text)
            calls.append((b, role, (lambda p=p, x=x, text=text: p._logits(x, text))))
    times: dict[tuple[str, str], list[float]] = {(b, r): [] for b, r, _ in calls}
    say(f"timing backends {', '.join(backends)} at {options.batch}×3×{size}×{size} ({options.repeats} repeats, interleaved)")
    with torch.inference_mode():
        for _ in range(max(options.warmup, 1)):
            for _b, _r, fn in calls:
                fn()
        for r in range(options.repeats):
            order = calls if r % 2 == 0 else calls[::-1]
            for b, role, fn in order:
                times[(b, role)].append(time_call(fn, device))
    out_times = {b: {f"{role}_ms": _sig(median(times[(b, role)])) for role in ("metasegnet", "baseline")}
                 for b in backends}
    speedup = {}
    for b in backends:
        t, o = out_times["torch"], out_times[b]
        speedup[b] = {"metasegnet": round(t["metasegnet_ms"] / o["metasegnet_ms"], 3),
                      "baseline": round(t["baseline_ms"] / o["baseline_ms"], 3),
                      "pair": round((t["metasegnet_ms"] + t["baseline_ms"]) / (o["metasegnet_ms"] + o["baseline_ms"]), 3)}
    say("agreement with torch on static/examples")
    tiles = example_tiles()
    agreement: dict[str, dict[str, float]] = {}
    agreement_min: dict[str, dict[str, float]] = {}
    ref: dict[str, list[np.ndarray]] = {}
    for b in backends:
        agreement[b], agreement_min[b] = {}, {}
        for role in ("metasegnet", "baseline"):
            p = preds[b][role]
            masks = [p.predict(t.rgb, tile_prompt(p.meta, t.zone) if p.uses_text else None).index for t in tiles]
            if b == "torch":
                ref[role] = masks
            same = [float((m == r).sum()) for m, r in zip(masks, ref[role], strict=True)]
            total = sum(m.size for m in masks)
            agreement[b][role] = round(sum(same) / max(total, 1), 5)
            agreement_min[b][role] = round(min(s / m.size for s, m in zip(same, masks, strict=True)), 5) if masks else 1.0
    return {
        "backends": out_times,
        "agreement": agreement,
        "agreement_min_tile": agreement_min,
        "agreement_tiles": [t.name for t in tiles],
        "backend_speedup": speedup,
        "backend_spread": {b: {role: _spread(times[(b, role)]) for role in ("metasegnet", "baseline")} for b in backends},
        "backend_weights": weights,
        "backend_threads": {b: (preds[b]["metasegnet"]._ort.threads if preds[b]["metasegnet"]._ort is not None
                                else torch.get_num_threads()) for b in backends},
    }


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


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


__all__ = [
    "BenchOptions",
    "DEFAULT_PROMPT",
    "PAIRS",
    "count_flops",
    "cpu_model_name",
    "format_table",
    "parse_sizes",
    "peak_rss_mb",
    "reset_peak_rss",
    "run_benchmark",
]
