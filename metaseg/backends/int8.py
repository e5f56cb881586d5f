"""``onnx-int8``: static QDQ quantisation of the fp32 graph (see :mod:`metaseg.backends`)."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from metaseg.backends.export import prompt_tokens
from metaseg.backends.tiles import CALIBRATION_SEED, _images, calibration_tiles, tile_prompt

if TYPE_CHECKING:
    from torch import nn

#: Op types statically quantised for onnx-int8 (see the module docstring).
INT8_OPS = ("Conv", "MatMul", "Gemm", "Clip", "Relu", "Resize")
CPUINFO = Path("/proc/cpuinfo")  #: read by :func:`int8_weight_bits` (x86 feature flags)


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



def quantize_int8(fp32_graph: Path, out: Path, model: nn.Module, meta: dict[str, Any] | None) -> dict[str, Any]:
    """Static QDQ int8 quantisation of ``fp32_graph`` calibrated on :func:`calibration_tiles`."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from metaseg.backends.cache import _atomic_write_bytes  # lazy: the cache names graphs by int8_weight_bits

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
