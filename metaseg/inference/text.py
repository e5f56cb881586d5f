"""Prompt handling of :class:`metaseg.inference.Predictor`: validation and the text-feature caches.

A prompt is encoded once (``model.encode_text``, which also caches per exact text); the predictor
keeps the features (``_text_cache``), their expansion to each batch size (``_expanded``) and, for
the ONNX backends, the padding-trimmed token arrays (``_tokens``). Each cache holds at most 16
prompts and is cleared whole when full (the simple choice: a session uses a handful of prompts).
This is a mixin so that the cache attributes stay on the predictor, where callers inspect them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from metaseg.errors import MetasegError


class PromptFeatures:
    """Mixin of :class:`~metaseg.inference.Predictor`: needs ``model``, ``device``, ``uses_text``,
    ``name`` and the dicts ``_text_cache``, ``_expanded`` and ``_tokens``."""

    model: Any
    device: torch.device
    _text_cache: dict[str, Any]
    _expanded: dict[tuple[str, int], Any]
    _tokens: dict[tuple[str, int], np.ndarray]

    def text_features(self, prompt: str) -> Any:
        """Encoded features of one prompt (computed once, then cached here and in the model)."""
        feats = self._text_cache.get(prompt)
        if feats is None:
            with torch.inference_mode():
                feats = self.model.encode_text([prompt])
            if hasattr(feats, "to"):
                feats = feats.to(self.device)
            if len(self._text_cache) >= 16:
                self._text_cache.clear()
                self._expanded.clear()
            self._text_cache[prompt] = feats
        return feats

    def _text_for_batch(self, prompt: str, batch: int) -> Any:
        key = (prompt, batch)
        cached = self._expanded.get(key)
        if cached is not None:
            return cached
        feats = self.text_features(prompt)
        out = feats
        if batch > 1 and dataclasses.is_dataclass(feats) and len(feats) == 1:
            values = {}
            for f in dataclasses.fields(feats):
                v = getattr(feats, f.name)
                values[f.name] = v.expand(batch, *v.shape[1:]) if isinstance(v, torch.Tensor) else v
            out = type(feats)(**values)
        self._expanded[key] = out
        return out

    # ------------------------------------------------------------------ forward
    def _ort_tokens(self, prompt: str, batch: int) -> np.ndarray:
        """Prompt features for the ONNX graph: B×L×C float32, padding tail cut (cached per prompt/batch)."""
        key = (prompt, batch)
        tokens = self._tokens.get(key)
        if tokens is None:
            from metaseg.models.cafdecoder import trim_padding

            feats = trim_padding(self.text_features(prompt).to("cpu"))
            one = feats.tokens.float().numpy()
            if not bool(feats.mask.all()):
                raise MetasegError("prompt features have padding inside the text; use --backend torch")
            tokens = np.ascontiguousarray(np.broadcast_to(one, (batch, *one.shape[1:])))
            if len(self._tokens) >= 16:
                self._tokens.clear()
            self._tokens[key] = tokens
        return tokens

    def _check_prompt(self, prompt: str) -> str:
        prompt = str(prompt)
        try:  # tokenizers need valid UTF-8: a lone surrogate (e.g. from undecodable argv bytes) is user input
            prompt.encode("utf-8")
        except UnicodeEncodeError:
            raise MetasegError(
                "the prompt is not valid Unicode text (it contains a lone surrogate code point); retype it"
            ) from None
        return prompt

    def _batch_prompts(self, prompts: str | list[str] | tuple[str, ...] | None,
                       batch: int) -> str | list[str] | None:
        if not self.uses_text:
            return None
        if prompts is None:  # "" is allowed: the stored "no text" prompt of the ablation
            raise MetasegError(f"model {self.name!r} needs a text prompt")
        if isinstance(prompts, str):
            return self._check_prompt(prompts)
        prompts = [self._check_prompt(q) for q in prompts]
        if len(prompts) != batch:
            raise ValueError(f"batch of {batch} images but {len(prompts)} prompts")
        return prompts

