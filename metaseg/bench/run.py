"""One benchmark run: models, text encoding, interleaved forward passes, FLOPs, sliding windows.

The order of the phases and why they are interleaved is described in :mod:`metaseg.bench`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from metaseg.bench.backends import backends_phase
from metaseg.bench.measure import (
    MemoryMeter,
    autocast,
    compile_parts,
    count_flops,
    cpu_model_name,
    current_rss_mb,
    loadavg,
    median,
    precision_dtype,
    sdpa_context,
    sig,
    spread,
    sync,
    time_call,
)
from metaseg.bench.options import PAIRS, BenchOptions
from metaseg.errors import ConfigError

log = logging.getLogger(__name__)


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
    dtype = precision_dtype(options.precision, device)
    if device.type == "cpu" and dtype is torch.float16:
        raise ConfigError("fp16 autocast is for CUDA; use --precision fp32 or bf16 on CPU")
    meter = MemoryMeter(device)
    meta, base, size, images = _build_models(options, device, say)
    cold, cached, n_tokens = _time_text(meta, options, device, say)
    flops = _count_flops(meta, base, images, options, device, dtype, say) if options.flops else None
    if options.compile:  # after the FLOP count: that needs the eager models
        say("compiling (torch.compile)")
        compile_parts(meta, options.compile_mode)
        compile_parts(base, options.compile_mode)
    meta_ms, base_ms, peak_mem = _time_forward(meta, base, images, options, device, dtype, meter, say)
    result = _forward_result(options, device, size, meta_ms, base_ms, cold, cached, peak_mem)
    result["text_tokens"] = n_tokens
    if flops is not None:
        result.update(_flops_result(flops, options, median(meta_ms), median(base_ms)))
    if options.backends:
        result.update(backends_phase(options, device, size, say))
        if flops is not None:
            result["backend_gflops_per_s"] = {
                b: {"metasegnet": round(flops["metasegnet"]["total"] / options.batch / (v["metasegnet_ms"] / 1e3) / 1e9, 1),
                    "baseline": round(flops["baseline"]["total"] / options.batch / (v["baseline_ms"] / 1e3) / 1e9, 1)}
                for b, v in result["backends"].items()}
    if options.sliding_sizes:
        result.update(_sliding(meta, device, size, options, meter, say))
    result.update(_context(options, meta, device, dtype, meter))
    return result


def _build_models(options: BenchOptions, device: Any, say: Callable[[str], Any]) -> tuple[Any, Any, int, Any]:
    """(MetaSegNet, baseline, image size, random image batch): same seed, device and memory format."""
    import torch

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
    gen = torch.Generator().manual_seed(options.seed)
    images = torch.rand(options.batch, 3, size, size, generator=gen).to(device)
    if options.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return meta, base, size, images


def _time_text(meta: Any, options: BenchOptions, device: Any,
               say: Callable[[str], Any]) -> tuple[list[float], list[float], int]:
    """(cold times, cached times, prompt tokens) of the text encoder."""
    import torch

    say("timing text encoding (cold vs cached)")
    prompt = options.prompt
    encoder = meta.text_encoder
    with torch.inference_mode():
        meta.encode_text([prompt])  # first call pays one-off lazy initialisation
        cold: list[float] = []
        for _ in range(options.repeats):
            encoder.clear_cache()
            cold.append(time_call(lambda: meta.encode_text([prompt]), device))
        cached = [time_call(lambda: meta.encode_text([prompt]), device) for _ in range(max(options.repeats, 20))]
    return cold, cached, int(meta.encode_text([prompt]).mask.sum())


def _count_flops(meta: Any, base: Any, images: Any, options: BenchOptions, device: Any, dtype: Any,
                 say: Callable[[str], Any]) -> dict[str, dict[str, int]]:
    say("counting FLOPs (one eager forward per model)")
    with sdpa_context(options.sdpa):
        feats = meta.encode_text([options.prompt])
        return {"metasegnet": count_flops(meta, images, feats, device, dtype),
                "baseline": count_flops(base, images, None, device, dtype)}


def _time_forward(meta: Any, base: Any, images: Any, options: BenchOptions, device: Any, dtype: Any,
                  meter: MemoryMeter, say: Callable[[str], Any]) -> tuple[list[float], list[float], float | None]:
    """(MetaSegNet times, baseline times, peak memory) of the forward passes, interleaved."""
    import torch

    prompt = options.prompt

    def run_meta() -> Any:
        return meta(images, text=meta.encode_text([prompt])).logits

    def run_base() -> Any:
        return base(images).logits

    size = images.shape[-1]
    say(f"timing forward passes at {options.batch}×3×{size}×{size} ({options.repeats} repeats)")
    meter.reset()
    meta_ms: list[float] = []
    base_ms: list[float] = []
    with torch.inference_mode(), autocast(device, dtype), sdpa_context(options.sdpa):
        for _ in range(options.warmup):
            time_call(run_meta, device)
            time_call(run_base, device)
        for r in range(options.repeats):
            order = ((run_meta, meta_ms), (run_base, base_ms))
            for fn, sink in (order if r % 2 == 0 else order[::-1]):
                sink.append(time_call(fn, device))
    return meta_ms, base_ms, meter.peak_mb()


def _forward_result(options: BenchOptions, device: Any, size: int, meta_ms: list[float], base_ms: list[float],
                    cold: list[float], cached: list[float], peak_mem: float | None) -> dict[str, Any]:
    """The ``bench --json`` contract keys (and their spreads) from the timings."""
    m_ms, b_ms = median(meta_ms), median(base_ms)
    result: dict[str, Any] = {
        "device": str(device),
        "size": size,
        "batch": options.batch,
        "metasegnet_ms": sig(m_ms),
        "baseline_ms": sig(b_ms),
        "ratio": sig(m_ms / b_ms),
        "text_encode_ms": sig(median(cold)),
        "text_cached_ms": sig(median(cached)),
        "tiles_per_s": sig(options.batch / (m_ms / 1e3)),
        "mpix_per_s": sig(options.batch * size * size / 1e6 / (m_ms / 1e3)),
        "peak_mem_mb": None if peak_mem is None else round(peak_mem, 1),
        "sliding": {},
    }
    result["both_ms"] = sig(m_ms + b_ms)
    result["ratio_paired_median"] = sig(median([a / b for a, b in zip(meta_ms, base_ms, strict=True)]))
    result["text_speedup"] = round(median(cold) / max(median(cached), 1e-9), 1)
    result["text_tokens"] = None  # set by the caller
    result["baseline_tiles_per_s"] = sig(options.batch / (b_ms / 1e3))
    result["spread"] = {"metasegnet_ms": spread(meta_ms), "baseline_ms": spread(base_ms),
                        "text_encode_ms": spread(cold), "text_cached_ms": spread(cached),
                        "ratio_per_repeat": spread([a / b for a, b in zip(meta_ms, base_ms, strict=True)])}
    return result


def _flops_result(flops: dict[str, dict[str, int]], options: BenchOptions, m_ms: float, b_ms: float) -> dict[str, Any]:
    """FLOPs per image, achieved TFLOP/s and (with a peak figure) the fraction of peak."""
    out: dict[str, Any] = {"flops": flops}
    out["gflops_per_image"] = {k: round(v["total"] / options.batch / 1e9, 3) for k, v in flops.items()}
    achieved = flops["metasegnet"]["total"] / (m_ms / 1e3) / 1e12
    out["achieved_tflops"] = round(achieved, 3)
    out["baseline_achieved_tflops"] = round(flops["baseline"]["total"] / (b_ms / 1e3) / 1e12, 3)
    if options.peak_tflops:
        out["peak_tflops"] = options.peak_tflops
        out["mfu"] = round(achieved / options.peak_tflops, 4)
    return out


def _context(options: BenchOptions, meta: Any, device: Any, dtype: Any, meter: MemoryMeter) -> dict[str, Any]:
    """What the figures were measured on and with."""
    import torch

    return {
        "pair": options.pair,
        "models": list(PAIRS[options.pair]),
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
        "loadavg": loadavg(),
    }


def _sliding(meta: Any, device: Any, size: int, options: BenchOptions, meter: MemoryMeter,
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
    with sdpa_context(options.sdpa):
        warm = rng.integers(0, 256, (size + size // 2, size + size // 2, 3), dtype=np.uint8)
        predictor.predict(warm, options.prompt, overlap=options.overlap)  # warm the predictor's paths
        del warm
        for n in schedule:
            key = str(n)
            say(f"sliding window on a {n}×{n} tile (window {size}, overlap {options.overlap})")
            tile = rng.integers(0, 256, (n, n, 3), dtype=np.uint8)
            rss_before = current_rss_mb() if device.type == "cpu" else None
            meter.reset()
            sync(device)
            start, cpu_start = time.perf_counter(), time.process_time()
            pred = predictor.predict(tile, options.prompt, overlap=options.overlap)
            sync(device)
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
        times[key] = sig(median(values))
        spreads[key] = spread(values)
    out: dict[str, Any] = {
        "sliding": times,
        "sliding_windows": windows,
        "sliding_ms_per_window": {k: sig(times[k] / max(windows[k], 1)) for k in times},
        # process CPU time per window (all threads): insensitive to other processes' load, so a
        # per-window cost that grows with the tile width shows here even on a busy machine
        "sliding_cpu_ms_per_window": {k: sig(median(v)) for k, v in cpu_runs.items() if v},
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
        out["sliding_ratio"] = sig(times[hi] / times[lo], 4)
        out["sliding_area_ratio"] = round((int(hi) / int(lo)) ** 2, 3)
        out["sliding_window_ratio"] = round(windows[hi] / max(windows[lo], 1), 3)
    return out


