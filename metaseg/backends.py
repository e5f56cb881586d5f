"""Inference backends of :class:`metaseg.inference.Predictor`: PyTorch, ONNX Runtime fp32 and int8.

Backends (``--backend`` on the CLIs, ``METASEG_BACKEND`` in the app):

* ``torch`` — the PyTorch model in eval mode (channels-last on CPU, bf16 autocast on CUDA).
* ``onnx`` — the model's **image path** (normalisation, padding to stride 32, image encoder,
  neck, CAF decoder, FPN head, upsampling and crop) exported with ``torch.onnx.export`` and run
  by ONNX Runtime's CPU execution provider, with ``torch.get_num_threads()`` intra-op threads
  (the same setting as the torch backend). Inputs: ``images`` B×3×H×W float32 in [0, 1]
  (batch, height and width dynamic; the graph pads to 32 itself) and, for MetaSegNet,
  ``text_tokens`` B×L×C_text: the frozen text encoder's features of the prompt with the
  all-padding tail cut (:func:`metaseg.models.cafdecoder.trim_padding`; L dynamic). The text
  encoder stays in PyTorch and its cache, so a prompt is encoded once, as with ``torch``.
* ``onnx-int8`` — the fp32 graph statically quantised by ``onnxruntime.quantization``: QDQ
  format, int8 per-channel weights, uint8 activations, MinMax calibration on the documented
  calibration set (:func:`calibration_tiles`: the five tiles of ``static/examples/`` and the eight
  SynthEarth tiles of ``static/calibration/``, generated with seed 4242 — never on the held-out
  test set, seed 12345). Quantised op types (:data:`INT8_OPS`): convolutions, MatMul/Gemm, their
  ReLU/ReLU6 activations (ONNX Runtime then fuses each into its int8 convolution) and Resize (the
  decoder's upsampling runs on uint8), so activations stay int8 between layers instead of making a
  round trip to fp32 around every activation. Kept in fp32 (:func:`int8_exclusions`): the stem
  convolution (its input is the normalised image, whose three channels would share one uint8
  scale), the first encoder stage, the classifier and the upsampling of the logits after it
  (quantised logits flip near-tied classes). Measured on the demo pair (class agreement with torch
  on the example tiles): every conv in int8 88 %; stem in fp32 95-96 %; plus the first stage
  97-98 % (convolutions only); with the activations and Resize also in int8 98.8 %, and a third
  less time. Weights are 8-bit, or 7-bit on x86 CPUs without VNNI (:func:`int8_weight_bits`).
  Normalisations, residual additions and the text path stay fp32 (ONNX Runtime may still
  run an attention softmax between two int8 matrix products on uint8).
* ``auto`` — ``onnx`` on CPU when its graph exists or can be built and passed its
  verification, else ``torch`` (with a logged reason); always ``torch`` on CUDA. int8 is opt-in.

**Verification.** Every graph is checked against the PyTorch model right after it is built, on
the real tiles of ``static/examples/`` (centre crops of at most 256², each MetaSegNet tile with
its zone's training prompt):
per tile the largest absolute logit difference and the fraction of pixels with the same class.
The record (``<graph>.json``) keeps these figures; ``onnx`` must agree on ≥ 99.9 % of the
pixels of every tile, ``onnx-int8`` on ≥ 95 % on average, or the backend is refused (``auto``
then falls back to torch).

**Cache.** Graphs are cached next to the checkpoint as
``<stem>.<backend>.<key>.ort<version>.onnx`` (``<backend>``: ``onnx``, ``onnx-int8-w8`` or
``onnx-int8-w7``) where ``key`` is a hash of the checkpoint files (weights + JSON; for a model
without a checkpoint, of its config and state dict) and of the export recipe, and ``<version>``
is onnxruntime's — a new checkpoint or runtime gives a new file.
Files are written to a temporary name and ``os.replace``-d into place (atomic), under a lock
file so that concurrent workers build once. The record holds the graph's SHA-256: a graph
whose bytes differ (truncated, corrupt) or that ONNX Runtime cannot load is rebuilt. When the
checkpoint's folder is not writable (e.g. weights shipped inside site-packages), and always for the
weights shipped in ``metaseg/weights/`` (the package folder stays as shipped), the graphs go to the
user cache: ``$METASEG_CACHE_DIR/onnx`` (``$METASEG_CACHE/onnx`` also accepted) or
``~/.cache/metaseg/onnx``; that shared cache is kept under ``METASEG_ONNX_CACHE_MB`` (default 2048;
the least recently written graphs go first; 0 = unbounded).

onnx, onnxruntime and onnxscript are imported lazily (only by the ONNX backends).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from metaseg.checkpoints import WEIGHTS_DIR as _SHIPPED_WEIGHTS
from metaseg.errors import ConfigError, MetasegError
from metaseg.onnx_graph import static_same_padding, streamline

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx", "onnx-int8", "auto")
ONNX_BACKENDS = ("onnx", "onnx-int8")
ONNX_OPSET = 17
#: Bump when the exported graph's recipe changes (wrapper, opset, quantisation settings).
EXPORT_RECIPE = 5
#: Verification thresholds (fraction of pixels with the same class as torch).
MIN_AGREEMENT = {"onnx": 0.999, "onnx-int8": 0.95}
VERIFY_SIDE = 256  #: verification tiles are centre crops of at most this side
CALIBRATION_SEED = 4242  #: seed of the SynthEarth tiles in static/calibration (held-out test: 12345)
#: Op types statically quantised for onnx-int8 (see the module docstring).
INT8_OPS = ("Conv", "MatMul", "Gemm", "Clip", "Relu", "Resize")
#: Prompt used when a checkpoint records no training prompt for a tile's zone.
FALLBACK_PROMPT = ("Aerial image. Bare land, rangeland, developed space, roads, trees, water, "
                   "agriculture land and buildings.")

if TYPE_CHECKING:
    import torch
    from torch import nn

_REPO = Path(__file__).resolve().parents[1]
EXAMPLES_DIR = _REPO / "static" / "examples"
CALIBRATION_DIR = _REPO / "static" / "calibration"
CPUINFO = Path("/proc/cpuinfo")  #: read by :func:`int8_weight_bits` (x86 feature flags)


def check_backend(name: str | None) -> str:
    """Normalise a backend name (``None`` → ``torch``).

    Raises:
        ConfigError: not one of :data:`BACKENDS`.
    """
    value = "torch" if name is None else str(name).strip().lower()
    if value not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; valid: {', '.join(BACKENDS)}")
    return value


def parse_backends(text: str) -> tuple[str, ...]:
    """``"torch,onnx,onnx-int8"`` → a tuple of concrete backends (``auto`` not allowed), torch first."""
    names = [check_backend(part) for part in str(text).split(",") if part.strip()]
    if not names:
        raise ConfigError("--backend needs at least one backend (torch, onnx, onnx-int8)")
    if "auto" in names:
        raise ConfigError("bench times concrete backends: use torch, onnx and/or onnx-int8, not auto")
    out = ["torch"] + [n for n in dict.fromkeys(names) if n != "torch"]
    return tuple(out)


# ----------------------------------------------------------------------------- export wrapper
def ImagePath(model: nn.Module) -> nn.Module:  # noqa: N802 - a class factory (torch imported lazily)
    """The image path of a :class:`metaseg.models.SegModel` as a tensor-only module (for export).

    ``ImagePath(model)(images, text_tokens=None)`` computes the same logits as
    ``SegModel.forward(images, text=TextFeatures(text_tokens, all-real mask))`` in eval mode.
    """
    return _image_path_class()(model)


_IMAGE_PATH_CLASS: type | None = None


def _image_path_class() -> type:
    global _IMAGE_PATH_CLASS
    if _IMAGE_PATH_CLASS is not None:
        return _IMAGE_PATH_CLASS
    import torch
    import torch.nn.functional as F  # noqa: N812
    from torch import nn

    from metaseg.models.text_encoder import TextFeatures

    class _ImagePath(nn.Module):
        """Same computation as ``SegModel.forward`` in eval mode, the text given as real tokens only."""

        def __init__(self, model: nn.Module):
            super().__init__()
            self.model = model

        def forward(self, images: torch.Tensor, text_tokens: torch.Tensor | None = None) -> torch.Tensor:
            m = self.model
            b, _, h, w = images.shape
            x = (images - m.mean) / m.std
            mult = int(m.config.pad_multiple)
            x = F.pad(x, (0, (-w) % mult, 0, (-h) % mult))
            feats = m.image_encoder(x)
            top = m.neck(feats[-1])
            if m.uses_text:
                if text_tokens is None:
                    raise ValueError("MetaSegNet's image path needs text_tokens")
                # mask None = every token is real (the caller cut the padding tail)
                text = TextFeatures(text_tokens, None, torch.zeros(b, dtype=torch.long))  # type: ignore[arg-type]
                top = m.decoder(top, text)[0]
            logits = m.head(list(feats[:-1]) + [top])
            logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
            return logits[:, :, :h, :w]

    _IMAGE_PATH_CLASS = _ImagePath
    return _ImagePath


def prompt_tokens(model: nn.Module, prompt: str) -> torch.Tensor:
    """1×L×C_text float32 features of ``prompt`` with the padding tail cut (L = real tokens)."""
    import torch

    from metaseg.models.cafdecoder import trim_padding

    with torch.inference_mode():
        feats = trim_padding(model.encode_text([prompt]).to("cpu"))
    if not bool(feats.mask.all()):
        raise MetasegError("prompt features have padding inside the text; the ONNX graph needs real tokens only")
    return feats.tokens.float().clone()


# ----------------------------------------------------------------------------- tiles
@dataclass
class ExampleTile:
    name: str
    rgb: np.ndarray  # H×W×3 uint8
    zone: str


def _zone_of(stem: str) -> str:
    if stem.startswith("synth_"):
        code = stem.split("_")[1]
        return code[:1].upper() + code[1:]
    return "Cfa"  # iguacu_landsat8: Foz do Iguaçu (see static/examples/CREDITS.md)


def example_tiles(folder: Path | None = None) -> list[ExampleTile]:
    """The real example tiles shipped in ``static/examples/`` (labels excluded), read as the CLI reads them."""
    from metaseg.geo import read_tile

    folder = EXAMPLES_DIR if folder is None else Path(folder)
    paths = sorted(p for p in folder.rglob("*.tif") if not p.stem.endswith("_label"))
    return [ExampleTile(p.stem, read_tile(p).rgb, _zone_of(p.stem)) for p in paths]


def calibration_tiles() -> list[ExampleTile]:
    """The int8 calibration set: ``static/examples/`` tiles plus ``static/calibration/*.png``.

    ``static/calibration/`` holds SynthEarth tiles generated with seed :data:`CALIBRATION_SEED`
    (``python scripts/make_calibration_set.py``), one per training zone. Without either folder
    (an installed package), deterministic smooth pseudo-images are used and the record says so.
    """
    from PIL import Image

    tiles = example_tiles() if EXAMPLES_DIR.is_dir() else []
    if CALIBRATION_DIR.is_dir():
        for p in sorted(CALIBRATION_DIR.glob("*.png")):
            with Image.open(p) as im:
                rgb = np.asarray(im.convert("RGB"))
            tiles.append(ExampleTile(p.stem, rgb, p.stem.split("_")[1] if "_" in p.stem else "Cfa"))
    if not tiles:
        tiles = _pseudo_tiles()
    return tiles


def _pseudo_tiles(n: int = 4, size: int = 256) -> list[ExampleTile]:
    rng = np.random.default_rng(CALIBRATION_SEED)
    out = []
    for i in range(n):
        low = rng.random((size // 32, size // 32, 3))
        img = np.kron(low, np.ones((32, 32, 1))) * 200 + rng.random((size, size, 3)) * 55
        out.append(ExampleTile(f"pseudo_{i}", img.astype(np.uint8), "Cfa"))
    return out


def tile_prompt(meta: dict[str, Any] | None, zone: str) -> str:
    """The training prompt of ``zone`` recorded in the checkpoint (fallback: a generic prompt)."""
    prompts = (meta or {}).get("train_prompts") or {}
    if isinstance(prompts, dict):
        for key, value in prompts.items():
            if str(key).lower() == zone.lower() and isinstance(value, str):
                return value
    return FALLBACK_PROMPT


def _images(rgb: np.ndarray) -> torch.Tensor:
    import torch

    return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1)[None].float().div(255.0).contiguous()


# ----------------------------------------------------------------------------- cache
def user_cache_dir() -> Path:
    """``$METASEG_CACHE_DIR/onnx`` (or ``$METASEG_CACHE/onnx``), else ``~/.cache/metaseg/onnx``."""
    root = (os.environ.get("METASEG_CACHE_DIR") or os.environ.get("METASEG_CACHE")
            or str(Path("~/.cache/metaseg").expanduser()))
    return Path(root).expanduser() / "onnx"


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=folder, prefix=".metaseg-write-test-")
    except OSError:
        return False
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(name)
    return True


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_key(model: nn.Module, checkpoint: Path | None = None) -> str:
    """Hash of the checkpoint files (or of the model's config + state dict) and the export recipe."""
    import torch

    h = hashlib.sha256(f"recipe{EXPORT_RECIPE}/opset{ONNX_OPSET}".encode())
    if checkpoint is not None:
        weights = Path(checkpoint)
        for p in (weights, weights.with_suffix(".json")):
            if p.is_file():
                h.update(_sha256_file(p).encode())
    else:
        config = getattr(model, "config", None)
        h.update(json.dumps(config.to_dict() if hasattr(config, "to_dict") else repr(config),
                            sort_keys=True, default=str).encode())
        for name, tensor in model.state_dict().items():
            if name.startswith("text_encoder."):
                continue
            h.update(name.encode())
            h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def graph_path(model: nn.Module, backend: str, checkpoint: Path | None = None) -> Path:
    """Where the graph of ``backend`` for this model lives: next to the checkpoint if writable, in
    :func:`user_cache_dir` for the shipped weights (the package folder stays as shipped) and for a
    model without a checkpoint."""
    import onnxruntime as ort

    stem = Path(checkpoint).with_suffix("").name if checkpoint is not None else str(
        getattr(getattr(model, "config", None), "name", "model"))
    folder = Path(checkpoint).parent if checkpoint is not None else None
    if folder is None or folder.resolve() == _SHIPPED_WEIGHTS.resolve() or not _writable(folder):
        folder = user_cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
    kind = f"{backend}-w{int8_weight_bits()}" if backend == "onnx-int8" else backend
    return folder / f"{stem}.{kind}.{model_key(model, checkpoint)}.ort{ort.__version__}.onnx"


def int8_weight_bits() -> int:
    """8, or 7 on x86 CPUs without VNNI (``METASEG_INT8_WEIGHT_BITS=7|8`` overrides).

    ONNX Runtime's x86 int8 kernels multiply uint8 activations by int8 weights. With VNNI
    (``avx512_vnni``/``avx_vnni``) the products are summed in 32 bits; without it (AVX2, AVX-512
    without VNNI) they go through VPMADDUBSW, whose 16-bit sums of two products can saturate, and
    ONNX Runtime's advice is to quantise the weights to 7 bits there (``reduce_range``). The
    choice is part of the cached graph's name, so machines that share a cache do not mix them.
    Measured on a VNNI machine, 7-bit weights cost 1 point of class agreement on the demo
    baseline (98.8 → 97.9 %) and 0.1 on MetaSegNet.
    """
    forced = os.environ.get("METASEG_INT8_WEIGHT_BITS", "").strip()
    if forced in ("7", "8"):
        return int(forced)
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return 8  # ARM's int8 dot products accumulate in 32 bits
    try:
        flags = CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return 7  # unknown x86 CPU: the safe choice
    return 8 if ("avx512_vnni" in flags or "avx_vnni" in flags) else 7


def _record_path(graph: Path) -> Path:
    return graph.with_name(graph.name + ".json")


def read_record(graph: Path) -> dict[str, Any] | None:
    """The verification record of a cached graph, or ``None`` when missing, unreadable or stale."""
    rec_path = _record_path(graph)
    if not graph.is_file() or not rec_path.is_file():
        return None
    try:
        record = json.loads(rec_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("sha256") != _sha256_file(graph):
        return None
    return record


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    lock = path.with_name(path.name + ".lock")
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    with open(lock, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ----------------------------------------------------------------------------- build
def export_fp32(model: nn.Module, tokens: torch.Tensor | None) -> bytes:
    """Serialized fp32 ONNX graph of the model's image path (dynamic batch, height, width, tokens).

    "Same" convolutions are exported with constant padding and their ``Pad`` nodes fused into the
    convolutions (:mod:`metaseg.onnx_graph`; valid because the graph pads images to ``pad_multiple``).
    """
    import io
    import warnings

    import torch

    wrapper = ImagePath(model).eval()
    images = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    args: tuple[Any, ...] = (images,)
    names = ["images"]
    axes: dict[str, dict[int, str]] = {"images": {0: "batch", 2: "height", 3: "width"},
                                       "logits": {0: "batch", 2: "height", 3: "width"}}
    if getattr(model, "uses_text", False):
        args = (images, tokens)
        names.append("text_tokens")
        axes["text_tokens"] = {0: "batch", 1: "tokens"}
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings(), \
            static_same_padding(model, int(getattr(model.config, "pad_multiple", 32))):
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, args, buf, input_names=names, output_names=["logits"], dynamic_axes=axes,
                          opset_version=ONNX_OPSET, dynamo=False, do_constant_folding=True)
    with tempfile.TemporaryDirectory(prefix="metaseg-export-") as tmp:
        return streamline(buf.getvalue(), Path(tmp))


def quantize_int8(fp32_graph: Path, out: Path, model: nn.Module, meta: dict[str, Any] | None) -> dict[str, Any]:
    """Static QDQ int8 quantisation of ``fp32_graph`` calibrated on :func:`calibration_tiles`."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    tiles = calibration_tiles()
    uses_text = bool(getattr(model, "uses_text", False))
    feeds = []
    for tile in tiles:
        feed = {"images": _images(tile.rgb).numpy()}
        if uses_text:
            feed["text_tokens"] = prompt_tokens(model, tile_prompt(meta, tile.zone)).numpy()
        feeds.append(feed)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_graph), str(pre), skip_symbolic_shape=True)
        q = Path(tmp) / "int8.onnx"
        excluded = int8_exclusions(pre)
        bits = int8_weight_bits()
        logging.getLogger().disabled, was = True, logging.getLogger().disabled  # quiet per-op warnings
        try:
            quantize_static(str(pre), str(q), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            reduce_range=bits == 7, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=list(INT8_OPS), nodes_to_exclude=excluded)
        finally:
            logging.getLogger().disabled = was
        _atomic_write_bytes(out, q.read_bytes())
    return {"calibration": [t.name for t in tiles], "calibration_seed": CALIBRATION_SEED,
            "quantization": {"format": "QDQ", "per_channel": True, "weights": "int8", "weight_bits": bits,
                             "activations": "uint8",
                             "calibration_method": "MinMax", "ops": list(INT8_OPS), "excluded": excluded}}


def int8_exclusions(graph: str | Path) -> list[str]:
    """Quantisable nodes kept in fp32.

    The first (stem) and last (classifier) convolution, the first encoder stage, and whatever
    follows the classifier (the upsampling of the logits: quantised logits flip near-tied classes).
    """
    import onnx

    nodes = list(onnx.load(str(graph), load_external_data=False).graph.node)
    convs = [i for i, n in enumerate(nodes) if n.op_type == "Conv"]
    if not convs:
        return []
    keep = {nodes[convs[0]].name, nodes[convs[-1]].name}
    keep.update(n.name for n in nodes[convs[-1] + 1:] if n.op_type in INT8_OPS)
    keep.update(n.name for n in nodes if n.op_type in INT8_OPS
                and ("/conv_stem/" in n.name or "/blocks.0/" in n.name or "/head/classifier/" in n.name))
    return sorted(keep)


def verify(session: OrtModel, model: nn.Module, meta: dict[str, Any] | None,
           tiles: Sequence[ExampleTile] | None = None) -> dict[str, Any]:
    """Compare ONNX Runtime with PyTorch on real tiles: per-tile max |Δlogit| and class agreement."""
    import torch

    if tiles is None:  # the example tiles, centre-cropped to at most VERIFY_SIDE² (the 512² Landsat crop)
        tiles = [ExampleTile(t.name, _centre_crop(t.rgb, VERIFY_SIDE), t.zone) for t in
                 (example_tiles() if EXAMPLES_DIR.is_dir() else _pseudo_tiles())]
    wrapper = ImagePath(model).eval()
    rows = []
    for tile in tiles:
        images = _images(tile.rgb)
        tokens = prompt_tokens(model, tile_prompt(meta, tile.zone)) if getattr(model, "uses_text", False) else None
        with torch.inference_mode():
            ref = wrapper(images.to(next(model.parameters()).device),
                          None if tokens is None else tokens.to(next(model.parameters()).device)).float().cpu().numpy()
        got = session.run(images.numpy(), None if tokens is None else tokens.numpy())
        rows.append({"tile": tile.name, "size": list(tile.rgb.shape[:2]),
                     "max_abs_diff": float(np.abs(got - ref).max()),
                     "agreement": float((got.argmax(1) == ref.argmax(1)).mean())})
    return {"tiles": rows,
            "agreement_min": min(r["agreement"] for r in rows),
            "agreement_mean": float(np.mean([r["agreement"] for r in rows])),
            "max_abs_diff": max(r["max_abs_diff"] for r in rows)}


def _centre_crop(rgb: np.ndarray, side: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    y, x = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return rgb[y:y + side, x:x + side]


def _passes(backend: str, check: dict[str, Any]) -> bool:
    if backend == "onnx":
        return check["agreement_min"] >= MIN_AGREEMENT["onnx"]
    return check["agreement_mean"] >= MIN_AGREEMENT["onnx-int8"]


def ensure_graph(model: nn.Module, backend: str, checkpoint: Path | None = None,
                 meta: dict[str, Any] | None = None) -> tuple[Path, dict[str, Any]]:
    """The cached, verified graph of ``backend`` for ``model`` (built, verified and cached if needed).

    Returns:
        ``(graph path, verification record)``; ``record["verified"]`` says whether it passed.

    Raises:
        MetasegError: the export or the quantisation failed (one line).
    """
    import torch

    if backend not in ONNX_BACKENDS:
        raise ConfigError(f"no ONNX graph for backend {backend!r}")
    model = model.eval()
    path = graph_path(model, backend, checkpoint)
    record = read_record(path)
    if record is not None:
        return path, record
    with _lock(path):
        record = read_record(path)  # another process may have built it meanwhile
        if record is not None:
            return path, record
        start = time.perf_counter()
        uses_text = bool(getattr(model, "uses_text", False))
        meta = dict(meta or {})
        extra: dict[str, Any] = {}
        try:
            if backend == "onnx":
                tokens = prompt_tokens(model, tile_prompt(meta, "Cfa")) if uses_text else None
                _atomic_write_bytes(path, export_fp32(model, tokens))
            else:
                fp32_path, fp32_record = ensure_graph(model, "onnx", checkpoint, meta)
                if not fp32_record.get("verified"):
                    raise MetasegError("the fp32 ONNX graph failed its verification; no int8 graph is built from it")
                extra = quantize_int8(fp32_path, path, model, meta)
        except MetasegError:
            raise
        except Exception as exc:  # noqa: BLE001 - exporter/quantiser failures are many kinds
            raise MetasegError(f"cannot build the {backend} graph of {getattr(model.config, 'name', 'model')}: "
                               f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}") from exc
        session = OrtModel(path, threads=torch.get_num_threads())
        check = verify(session, model, meta)
        import onnxruntime as ort

        record = {
            "backend": backend, "model": str(getattr(model.config, "name", "")), "key": model_key(model, checkpoint),
            "checkpoint": None if checkpoint is None else str(checkpoint), "onnxruntime": ort.__version__,
            "torch": torch.__version__, "opset": ONNX_OPSET, "recipe": EXPORT_RECIPE,
            "sha256": _sha256_file(path), "bytes": path.stat().st_size,
            "build_seconds": round(time.perf_counter() - start, 2),
            "verification": check, "min_agreement": MIN_AGREEMENT[backend],
            "verified": _passes(backend, check), **extra,
        }
        _atomic_write_bytes(_record_path(path), (json.dumps(record, indent=2) + "\n").encode())
        if path.parent == user_cache_dir():  # the shared cache stays under METASEG_ONNX_CACHE_MB
            from metaseg.cachebound import budget_bytes, trim

            trim(path.parent, budget_bytes("METASEG_ONNX_CACHE_MB", 2048), keep=[path, _record_path(path)])
        log.info("built %s (%s): agreement min %.4f, max |dlogit| %.3g, %.1fs", path.name, backend,
                 check["agreement_min"], check["max_abs_diff"], record["build_seconds"])
        return path, record


# ----------------------------------------------------------------------------- torch backend
_FOLDABLE_PARENTS = ("EfficientNetFeatures", "EfficientNet", "DepthwiseSeparableConv", "InvertedResidual",
                     "EdgeResidual", "ConvBnAct")


def fold_batchnorm(model: nn.Module) -> int:
    """Fold eval-mode BatchNorm into the preceding convolution of timm EfficientNet blocks (in place).

    In each timm EfficientNet module, a ``BatchNorm2d``/``BatchNormAct2d`` child registered right
    after a ``Conv2d`` child follows it in ``forward`` too; its affine transform is folded into
    the convolution's weight and bias and the norm is replaced by its activation alone. Other
    modules are left untouched. Returns the number of folded norms. (Measured for the torch
    backend; see docs/BENCHMARKS.md for whether the predictor uses it.)
    """
    import torch
    from torch import nn

    folded = 0
    for parent in list(model.modules()):
        if type(parent).__name__ not in _FOLDABLE_PARENTS:
            continue
        prev_name, prev = None, None
        for name, child in list(parent.named_children()):
            if (isinstance(child, nn.BatchNorm2d) and isinstance(prev, nn.Conv2d) and child.track_running_stats
                    and child.running_var is not None and prev.out_channels == child.num_features):
                with torch.no_grad():
                    scale = (child.weight if child.affine else torch.ones_like(child.running_var)) / torch.sqrt(
                        child.running_var + child.eps)
                    shift = (child.bias if child.affine else torch.zeros_like(child.running_mean))
                    bias = prev.bias if prev.bias is not None else torch.zeros_like(child.running_mean)
                    prev.weight.mul_(scale.view(-1, 1, 1, 1).to(prev.weight.dtype))
                    new_bias = (bias - child.running_mean) * scale + shift
                    prev.bias = nn.Parameter(new_bias.to(prev.weight.dtype), requires_grad=False)
                rest = [m for key in ("drop", "act") if isinstance(m := getattr(child, key, None), nn.Module)]
                setattr(parent, name, nn.Sequential(*rest) if rest else nn.Identity())
                folded += 1
                prev_name, prev = name, None
                continue
            prev_name, prev = name, child
        del prev_name
    return folded


# ----------------------------------------------------------------------------- runtime
class OrtModel:
    """An ONNX Runtime CPU session of an exported image path.

    Args:
        path: the ``.onnx`` graph.
        threads: intra-op threads (the predictor passes ``torch.get_num_threads()``).
    """

    def __init__(self, path: Path, threads: int | None = None):
        import onnxruntime as ort
        import torch

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # No busy-waiting between runs: the app and the bench keep several sessions (MetaSegNet,
        # baseline, fp32 and int8) plus torch's own threads in one process, and a session whose
        # pool spins after its run steals the cores from the next one. Measured on 2 cores, four
        # baseline sessions interleaved: 86-107 ms per 512² run spinning, 60-78 ms without.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = Path(path)
        self.threads = options.intra_op_num_threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    @property
    def uses_text(self) -> bool:
        return "text_tokens" in self.input_names

    def run(self, images: np.ndarray, tokens: np.ndarray | None = None) -> np.ndarray:
        """Logits B×K×H×W float32 of B×3×H×W float32 images in [0, 1] (and B×L×C tokens)."""
        feed = {"images": np.ascontiguousarray(images, dtype=np.float32)}
        if self.uses_text:
            if tokens is None:
                raise MetasegError("this ONNX graph needs text tokens (MetaSegNet)")
            feed["text_tokens"] = np.ascontiguousarray(tokens, dtype=np.float32)
        return self.session.run(None, feed)[0]


def load_session(model: nn.Module, backend: str, checkpoint: Path | None = None,
                 meta: dict[str, Any] | None = None) -> tuple[OrtModel, dict[str, Any]]:
    """A verified ONNX Runtime session for ``backend`` (graph built or rebuilt as needed).

    Raises:
        MetasegError: the graph cannot be built, or it failed its verification against PyTorch.
    """
    path, record = ensure_graph(model, backend, checkpoint, meta)
    try:
        session = OrtModel(path)
    except Exception as exc:  # noqa: BLE001 - a corrupt graph that still matched its hash: rebuild once
        log.warning("cached graph %s does not load (%s); rebuilding", path.name, type(exc).__name__)
        with contextlib.suppress(OSError):
            _record_path(path).unlink()
        path, record = ensure_graph(model, backend, checkpoint, meta)
        session = OrtModel(path)
    if not record.get("verified"):
        check = record.get("verification", {})
        raise MetasegError(
            f"the {backend} graph of {record.get('model')} disagrees with PyTorch on the example tiles "
            f"(agreement min {check.get('agreement_min', float('nan')):.4f}, mean "
            f"{check.get('agreement_mean', float('nan')):.4f}); use --backend torch"
        )
    return session, record


__all__ = [
    "BACKENDS",
    "CALIBRATION_SEED",
    "ImagePath",
    "OrtModel",
    "calibration_tiles",
    "check_backend",
    "ensure_graph",
    "example_tiles",
    "graph_path",
    "load_session",
    "model_key",
    "parse_backends",
    "read_record",
    "user_cache_dir",
    "verify",
]
