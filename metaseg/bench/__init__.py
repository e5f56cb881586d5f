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

Modules: :mod:`.options` (pairs, defaults, :class:`BenchOptions`), :mod:`.run` (phases 1–6, 8),
:mod:`.backends` (phase 7), :mod:`.measure` (timers, memory meters, precision contexts),
:mod:`.table` (the text output).
"""

from metaseg.bench.measure import count_flops, cpu_model_name, peak_rss_mb, reset_peak_rss
from metaseg.bench.options import DEFAULT_PROMPT, PAIRS, BenchOptions, parse_sizes
from metaseg.bench.run import run_benchmark
from metaseg.bench.table import format_table

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
