"""Rewrites that make the exported image path cheaper for ONNX Runtime (used by :mod:`metaseg.backends.export`).

TensorFlow-style "same" convolutions (timm's ``Conv2dSame``, used by the ``tf_*`` EfficientNets
such as the demo pair's ``tf_efficientnet_lite0``) pad their input by an amount computed from
its size at run time. Exported as is, each becomes a shape computation feeding a ``Pad`` node
that ONNX Runtime cannot merge into the convolution, so every strided convolution copies its
input once more, breaks the blocked-layout chain (extra reorders) and, in the int8 graph, forces
a dequantise → pad → quantise round trip in full precision. Measured on the demo baseline at
512², 2 threads: fp32 66 → 54 ms, and the int8 graph's ``Pad`` + surrounding (de)quantisation
was a third of its time.

The image path pads every image to a multiple of the model's ``pad_multiple`` (32) before the
encoder, so the input of each strided convolution has a size divisible by its stride; then the
"same" padding does not depend on the size at all: ``total = max((k - 1)·d + 1 - s, 0)`` per
axis, ``total // 2`` before and the rest after (timm's split). :func:`static_same_padding`
swaps in that constant padding for the export (checked per layer with a dry run at one
``pad_multiple``; a layer where it would not hold keeps the dynamic form), and
:func:`fuse_pads` folds each constant zero ``Pad`` into the ``pads`` attribute of the ``Conv``
that reads it, after ONNX Runtime's basic (hardware-independent) optimisations have folded the
pad amounts into constants (:func:`optimize_basic`).

onnx and onnxruntime are imported lazily; torch only by :func:`static_same_padding`.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn


def same_pads(kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TF "same" padding (before, after) along one axis whose input size is divisible by ``stride``."""
    total = max((kernel - 1) * dilation + 1 - stride, 0)
    return total // 2, total - total // 2


def _same_conv_types() -> tuple[type, ...]:
    try:
        from timm.layers.conv2d_same import Conv2dSame
    except ImportError:  # pragma: no cover - timm is a core dependency
        return ()
    return (Conv2dSame,)


@contextlib.contextmanager
def static_same_padding(model: nn.Module, multiple: int) -> Iterator[int]:
    """Inside the block, "same" convolutions of ``model.image_encoder`` pad by constants.

    Yields the number of layers switched. Only layers whose input, for an image of
    ``multiple × multiple`` pixels, has both sides divisible by the stride are switched (then
    every multiple of it is too); their ``forward`` is restored on exit.
    """
    import torch
    import torch.nn.functional as F  # noqa: N812

    types_ = _same_conv_types()
    encoder = getattr(model, "image_encoder", model)
    convs = [m for m in encoder.modules() if types_ and isinstance(m, types_)]
    if not convs:
        yield 0
        return
    sizes: dict[int, tuple[int, int]] = {}
    hooks = [c.register_forward_pre_hook(lambda mod, args: sizes.__setitem__(id(mod), tuple(args[0].shape[-2:])))
             for c in convs]
    try:
        param = next(model.parameters())
        with torch.no_grad():
            encoder(torch.zeros(1, 3, multiple, multiple, device=param.device, dtype=param.dtype))
    finally:
        for h in hooks:
            h.remove()

    def forward(self: Any, x: torch.Tensor, pads: tuple[int, int, int, int] = (0, 0, 0, 0)) -> torch.Tensor:
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)

    switched = []
    for conv in convs:
        size = sizes.get(id(conv))
        if size is None or any(n % s for n, s in zip(size, conv.stride, strict=True)):
            continue
        (top, bottom), (left, right) = (same_pads(k, s, d) for k, s, d in
                                        zip(conv.kernel_size, conv.stride, conv.dilation, strict=True))
        conv.forward = types.MethodType(lambda self, x, p=(left, right, top, bottom): forward(self, x, p), conv)
        switched.append(conv)
    try:
        yield len(switched)
    finally:
        for conv in switched:
            del conv.forward


def optimize_basic(src: Path, dst: Path) -> None:
    """ONNX Runtime's basic graph optimisations (constant folding, redundant nodes) written to ``dst``.

    Basic rewrites are hardware-independent and keep the graph in standard ONNX operators.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(dst)
    options.log_severity_level = 3
    ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])


def fuse_pads(model: Any) -> int:
    """Fold constant zero ``Pad`` nodes into the ``pads`` of the single ``Conv`` reading them (in place).

    A ``Pad`` qualifies when its mode is ``constant``, its pads and value are initializers, the
    value is 0, it pads spatial axes only, by non-negative amounts, and its one consumer is a
    ``Conv`` with explicit padding. Returns the number of ``Pad`` nodes removed.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    readers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    removed = []
    for node in graph.node:
        if node.op_type != "Pad" or node.output[0] in outputs or len(node.input) < 2 or node.input[1] not in inits:
            continue
        mode = next((a.s for a in node.attribute if a.name == "mode"), b"constant")
        value = node.input[2] if len(node.input) > 2 else ""
        if mode != b"constant" or (len(node.input) > 3 and node.input[3]):
            continue
        if value and (value not in inits or np.any(numpy_helper.to_array(inits[value]) != 0)):
            continue
        users = readers.get(node.output[0], [])
        if len(users) != 1 or users[0].op_type != "Conv":
            continue
        conv = users[0]
        if any(a.name == "auto_pad" and a.s not in (b"", b"NOTSET") for a in conv.attribute):
            continue
        pads = [int(v) for v in numpy_helper.to_array(inits[node.input[1]]).reshape(-1)]
        rank = len(pads) // 2
        if rank < 3 or pads[0] or pads[1] or pads[rank] or pads[rank + 1] or min(pads) < 0:
            continue
        spatial = rank - 2
        old = next((list(a.ints) for a in conv.attribute if a.name == "pads"), [0] * (2 * spatial))
        new = [old[i] + pads[2 + i] for i in range(spatial)] + [old[spatial + i] + pads[rank + 2 + i]
                                                                 for i in range(spatial)]
        for attr in [a for a in conv.attribute if a.name == "pads"]:
            conv.attribute.remove(attr)
        conv.attribute.append(helper.make_attribute("pads", new))
        conv.input[0] = node.input[0]
        removed.append(node)
    for node in removed:
        graph.node.remove(node)
    return len(removed)


def streamline(raw: bytes, workdir: Path) -> bytes:
    """``raw`` exported graph → basic-optimised graph with its constant pads fused into convolutions."""
    import onnx

    src, opt = Path(workdir) / "raw.onnx", Path(workdir) / "basic.onnx"
    src.write_bytes(raw)
    optimize_basic(src, opt)
    model = onnx.load(str(opt))
    fuse_pads(model)
    return model.SerializeToString()
