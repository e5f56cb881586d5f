"""Graph rewrites of the exported image path (metaseg.onnx_graph): constant "same" padding, Pad→Conv fusion."""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from timm.layers.conv2d_same import Conv2dSame
from torch import nn

from metaseg.backends.onnx_graph import fuse_pads, same_pads, static_same_padding, streamline


class _Encoder(nn.Module):
    """Strided TF-"same" convolutions with odd/even kernels and a dilation, like the tf_ EfficientNets."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.image_encoder = nn.Sequential(
            Conv2dSame(3, 4, 3, stride=2), nn.ReLU(),
            Conv2dSame(4, 4, 5, stride=2, groups=4), nn.ReLU(),
            Conv2dSame(4, 6, 4, stride=2), nn.ReLU(),
            Conv2dSame(6, 6, 3, stride=1, dilation=2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.image_encoder(x)


def test_same_pads_match_timm_for_sizes_divisible_by_the_stride():
    from timm.layers.padding import pad_same_arg

    for k, s, d in [(3, 2, 1), (5, 2, 1), (4, 2, 1), (3, 1, 2), (1, 2, 1), (7, 4, 1)]:
        for n in (8 * s, 12 * s, 32 * s):
            left, right, _, _ = pad_same_arg([n, n], [k, k], [s, s], [d, d])
            assert same_pads(k, s, d) == (left, right), (k, s, d, n)


def test_static_padding_gives_the_same_output_and_is_undone():
    model = _Encoder().eval()
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        ref = model(x)
        with static_same_padding(model, 32) as switched:
            assert switched == 4
            assert all("forward" in vars(m) for m in model.modules() if isinstance(m, Conv2dSame))
            got = model(x)
        assert not any("forward" in vars(m) for m in model.modules() if isinstance(m, Conv2dSame))
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)


def test_layers_whose_input_is_not_divisible_keep_dynamic_padding():
    model = _Encoder().eval()
    with static_same_padding(model, 4) as switched:  # 4 → 2 → 1: the third stride-2 conv sees 1 pixel
        assert switched == 3  # the first two, and the dilated stride-1 one
        kept = [m for m in model.modules() if isinstance(m, Conv2dSame) and "forward" not in vars(m)]
        assert len(kept) == 1 and kept[0].stride == (2, 2) and kept[0].kernel_size == (4, 4)


def _export(model: nn.Module) -> bytes:
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.rand(1, 3, 64, 64),), buf, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}}, opset_version=17, dynamo=False)
    return buf.getvalue()


def _run(graph: bytes, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(graph, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_streamlined_export_has_no_pad_nodes_and_the_same_output(tmp_path):
    model = _Encoder().eval()
    with static_same_padding(model, 32):
        graph = streamline(_export(model), tmp_path)
    ops = [n.op_type for n in onnx.load_from_string(graph).graph.node]
    assert "Pad" not in ops and ops.count("Conv") == 4
    dynamic_ops = [n.op_type for n in onnx.load_from_string(_export(model)).graph.node]
    assert dynamic_ops.count("Pad") == 4  # what the rewrite removes
    for h, w in [(64, 64), (96, 160), (32, 224)]:  # dynamic sizes, all multiples of 32
        x = np.random.default_rng(h).random((1, 3, h, w), dtype=np.float32)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(_run(graph, x), ref, rtol=0, atol=1e-5)


def _pad_conv_graph(pads, mode=b"constant", value=None, extra_reader=False, conv_pads=(1, 1, 1, 1)):
    inits = [numpy_helper.from_array(np.array(pads, dtype=np.int64), "pads"),
             numpy_helper.from_array(np.random.default_rng(0).random((2, 3, 3, 3), dtype=np.float32), "w")]
    pad_inputs = ["x", "pads"]
    if value is not None:
        inits.append(numpy_helper.from_array(np.array(value, dtype=np.float32), "value"))
        pad_inputs.append("value")
    nodes = [helper.make_node("Pad", pad_inputs, ["p"], name="pad", mode=mode.decode()),
             helper.make_node("Conv", ["p", "w"], ["y"], name="conv", pads=list(conv_pads), strides=[2, 2])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if extra_reader:
        nodes.append(helper.make_node("Relu", ["p"], ["r"], name="relu"))
        outputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 9, 10])],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("value", [None, 0.0])
def test_fuse_pads_folds_zero_spatial_padding_into_the_conv(value):
    model = _pad_conv_graph([0, 0, 0, 1, 0, 0, 2, 1], value=value)
    x = np.random.default_rng(1).random((1, 3, 9, 10), dtype=np.float32)
    before = _run(model.SerializeToString(), x)
    assert fuse_pads(model) == 1
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    assert [n.op_type for n in model.graph.node] == ["Conv"] and conv.input[0] == "x"
    assert list(next(a.ints for a in conv.attribute if a.name == "pads")) == [1, 2, 3, 2]
    np.testing.assert_allclose(_run(model.SerializeToString(), x), before, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kwargs", [
    dict(pads=[0, 0, 1, 1, 0, 0, 1, 1], mode=b"reflect"),
    dict(pads=[0, 0, 1, 1, 0, 0, 1, 1], value=0.5),           # non-zero fill
    dict(pads=[0, 1, 1, 1, 0, 0, 1, 1]),                      # pads a channel
    dict(pads=[0, 0, -1, 0, 0, 0, 1, 1]),                     # crops
    dict(pads=[0, 0, 1, 1, 0, 0, 1, 1], extra_reader=True),   # another node reads the padded tensor
])
def test_fuse_pads_leaves_what_a_conv_cannot_express(kwargs):
    model = _pad_conv_graph(**kwargs)
    assert fuse_pads(model) == 0
    assert [n.op_type for n in model.graph.node][:2] == ["Pad", "Conv"]
