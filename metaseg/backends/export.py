"""Export of the image path to ONNX: the tensor-only wrapper :func:`ImagePath`, prompt tokens, fp32 graph."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metaseg.backends.onnx_graph import static_same_padding, streamline
from metaseg.errors import MetasegError

if TYPE_CHECKING:
    import torch
    from torch import nn

ONNX_OPSET = 17
#: Bump when the exported graph's recipe changes (wrapper, opset, quantisation settings).
EXPORT_RECIPE = 5


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
