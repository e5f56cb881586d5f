"""`SegModel`: MetaSegNet (``uses_text=True``) and its text-free baseline in one class.

Pipeline (forward written once):

1. normalise the B×3×H×W [0, 1] RGB input with ImageNet mean/std, zero-pad to a multiple of
   ``pad_multiple`` (32);
2. image encoder → stages (strides 4, 8, 16, 32);
3. ``neck``: 1×1 conv + GN + ReLU maps the stride-32 stage to ``caf_dim`` (both models);
4. MetaSegNet only: CAFDecoder fuses the prompt into that map (baseline: identity);
5. FPN head over [stride 4, 8, 16 stages, fused stride-32 map] → logits, bilinearly upsampled
   to the padded size and cropped back to H×W.

Only step 4 differs, so the baseline is exactly "same encoder + same head, no text".

Size: ``metasegnet_swin_b`` (Swin-B + CAFDecoder + FPN head, frozen ``bert-base-uncased``) has
201.5 M parameters, 92.0 M of them trainable (46 %); the paper reports 399.7 M with about a
quarter trainable. Only the frozen text encoder can account for the gap: with a frozen
BERT-large (``metasegnet_swin_b_bert_large``) the same model has 427.2 M, 22 % trainable, the
nearest standard size; no BERT size gives 399.7 M exactly. The counts are computed from the
encoders' configurations in :mod:`metaseg.models.param_count` and printed by
``python -m metaseg info --model metasegnet_swin_b --json`` (``paper_comparison``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from metaseg.errors import ConfigError
from metaseg.models.cafdecoder import CAFDecoder, _groups
from metaseg.models.config import MetaSegNetConfig
from metaseg.models.heads import FPNHead
from metaseg.models.image_encoders import ImageEncoder
from metaseg.models.text_encoder import TextEncoder, TextFeatures

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

TextInput = str | list[str] | tuple[str, ...] | TextFeatures | None


@dataclass
class SegOutput:
    """Model output.

    Attributes:
        logits: B×K×H×W class scores at the input size.
        img_embed: B×D normalised image embedding (MetaSegNet only, else None).
        txt_embed: B×D normalised text embedding (MetaSegNet only, else None).
        itm_loss: scalar L_itm (contrastive + matching), only in training mode for MetaSegNet.
    """

    logits: torch.Tensor
    img_embed: torch.Tensor | None = None
    txt_embed: torch.Tensor | None = None
    itm_loss: torch.Tensor | None = None


class SegModel(nn.Module):
    """MetaSegNet / baseline segmentation model.

    Args:
        config: hyper-parameters (stored in checkpoints).
        text_encoder: an existing :class:`TextEncoder` to reuse (e.g. shared between models or
            test cases); by default one is built from ``config.text_encoder``.
    """

    def __init__(self, config: MetaSegNetConfig, text_encoder: TextEncoder | None = None):
        super().__init__()
        self.config = config
        self.uses_text = bool(config.uses_text)
        self.image_encoder = ImageEncoder(config.encoder, config.encoder_out_indices, config.pretrained,
                                          config.image_size)
        chans = self.image_encoder.out_channels
        self.neck = nn.Sequential(
            nn.Conv2d(chans[-1], config.caf_dim, 1, bias=False),
            nn.GroupNorm(_groups(config.caf_dim), config.caf_dim),
            nn.ReLU(inplace=True),
        )
        self.text_encoder: TextEncoder | None = None
        self.decoder: CAFDecoder | None = None
        if self.uses_text:
            if text_encoder is None:
                text_encoder = TextEncoder(config.text_encoder, config.max_tokens, config.text_cache_size,
                                           config.text_fallback)
            elif text_encoder.max_tokens != config.max_tokens:
                raise ConfigError(
                    f"shared text encoder pads to {text_encoder.max_tokens} tokens, config wants {config.max_tokens}"
                )
            self.text_encoder = text_encoder
            config.text_encoder = text_encoder.name  # record what was actually loaded
            self.decoder = CAFDecoder(
                config.caf_dim, text_encoder.hidden_size, config.caf_heads, config.caf_mlp_ratio,
                config.joint_depth, config.pos_grid, config.max_tokens, config.embed_dim, config.queue_size,
                config.temperature, prior_fusion=config.text_prior_fusion,
            )
        self.head = FPNHead(list(chans[:-1]) + [config.caf_dim], config.decoder_dim, config.num_classes)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    # -- text ---------------------------------------------------------------------------------
    def encode_text(self, texts: str | list[str]) -> TextFeatures | None:
        """Frozen text features of prompts (cached per exact text, no grad). Baseline: None."""
        if self.text_encoder is None:
            return None
        return self.text_encoder(texts)

    def _text_features(self, text: TextInput, batch: int, what: str) -> TextFeatures | None:
        if text is None:
            return None
        if isinstance(text, str):
            text = [text] * batch
        if not isinstance(text, TextFeatures):
            text = list(text)
            if len(text) == 1 and batch > 1:
                text = text * batch
            if len(text) != batch:
                raise ValueError(f"batch of {batch} images but {len(text)} {what}")
            text = self.encode_text(text)
        elif len(text) == 1 and batch > 1:
            text = TextFeatures(text.tokens.expand(batch, -1, -1), text.mask.expand(batch, -1), text.ids.expand(batch))
        if len(text) != batch:
            raise ValueError(f"batch of {batch} images but {len(text)} {what}")
        return text.to(self.mean.device)

    def train(self, mode: bool = True) -> SegModel:
        super().train(mode)
        if self.text_encoder is not None:
            self.text_encoder.train(False)  # frozen encoder stays in eval mode
        return self

    # -- forward ------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor, text: TextInput = None, *, negative_text: TextInput = None) -> SegOutput:
        """Segment a batch.

        Args:
            images: B×3×H×W float RGB in [0, 1] (any H, W).
            text: prompt(s): one string (broadcast), B strings, or precomputed TextFeatures.
                Required for MetaSegNet, ignored by the baseline.
            negative_text: mismatched prompts for the ITM matching head (training only).

        Returns:
            SegOutput with logits B×K×H×W (and ITM terms for MetaSegNet).
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be B×3×H×W, got {tuple(images.shape)}")
        b, _, h, w = images.shape
        # 1. normalise + pad
        x = (images.to(self.mean.dtype) - self.mean) / self.std
        m = self.config.pad_multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        # 2. encoder
        feats = self.image_encoder(x)
        # 3. neck on the coarsest stage
        top = self.neck(feats[-1])
        out = SegOutput(logits=top)  # logits filled below
        # 4. cross-modal fusion
        if self.uses_text:
            feats_t = self._text_features(text, b, "text prompts")
            if feats_t is None:
                raise ConfigError("MetaSegNet needs a text prompt (text=...); the baseline takes none")
            neg = self._text_features(negative_text, b, "negative prompts") if self.training else None
            top, out.img_embed, out.txt_embed, out.itm_loss = self.decoder(top, feats_t, neg, with_itm=self.training)
        # 5. head, upsample, crop
        logits = self.head(list(feats[:-1]) + [top])
        logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        out.logits = logits[:, :, :h, :w]
        return out

    # -- bookkeeping --------------------------------------------------------------------------
    def component_params(self) -> dict[str, int]:
        """Parameter counts per component (image_encoder, text_encoder, decoder, neck, head)."""
        parts = {"image_encoder": self.image_encoder, "text_encoder": self.text_encoder,
                 "decoder": self.decoder, "neck": self.neck, "head": self.head}
        return {k: (sum(p.numel() for p in v.parameters()) if v is not None else 0) for k, v in parts.items()}
