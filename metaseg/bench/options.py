"""What `metaseg bench` measures: model pairs, defaults and :class:`BenchOptions`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from metaseg.errors import ConfigError, UnknownNameError

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


