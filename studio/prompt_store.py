"""The shared prompt store of ``$METASEG_DB`` and the checks before a visitor saves a prompt."""

from __future__ import annotations

import os
import threading
from typing import Any

from metaseg.errors import MetasegError
from studio.limits import env_int

_store_lock = threading.Lock()
_stores: dict[str, Any] = {}


def get_store():
    """The shared :class:`prompts_db.PromptStore` of ``$METASEG_DB`` (one per database path)."""
    from prompts_db import PromptStore, default_db_path

    key = str(default_db_path())
    with _store_lock:
        store = _stores.get(key)
        if store is None:
            store = PromptStore(key)
            _stores[key] = store
        return store


_prompt_limits: dict[tuple[str, int], Any] = {}


def check_prompt_save(session_key: str) -> None:
    """Count one prompt-version save (typed, restored or LLM-generated) of a session: at most
    ``METASEG_PROMPT_SAVES_PER_MINUTE`` (default 10) per session and
    ``METASEG_PROMPT_SAVES_GLOBAL_PER_MINUTE`` (default 120) for the whole server. The store is
    shared by every visitor (that is its purpose), so one visitor must not flood it."""
    from metaseg.imagery import RateLimiter

    per = env_int("METASEG_PROMPT_SAVES_PER_MINUTE", 10)
    total = env_int("METASEG_PROMPT_SAVES_GLOBAL_PER_MINUTE", 120)
    with _store_lock:
        mine = _prompt_limits.setdefault(("session", per), RateLimiter(per, 60.0, "prompt versions saved",
                                                                         MetasegError))
        everyone = _prompt_limits.setdefault(("process", total), RateLimiter(
            total, 60.0, "prompt versions saved on this server by all visitors", MetasegError))
    mine.check(session_key)
    everyone.check("all sessions")


def check_prompt_text(text: Any) -> str:
    """A prompt for the models: at most the store's limit of characters (the same cap as saving)."""
    from prompts_db import MAX_TEXT_CHARS

    text = str(text or "")
    if len(text) > MAX_TEXT_CHARS:
        raise MetasegError(f"the prompt has {len(text):,} characters; the limit is {MAX_TEXT_CHARS:,}")
    return text


def llm_status() -> tuple[bool, str]:
    """Whether LLM regeneration is available, and a one-line reason shown in the UI."""
    if os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL"):
        model = os.environ.get("METASEG_LLM_MODEL") or "the default model"
        return True, f"LLM configured ({model})."
    return False, "LLM regeneration needs OPENAI_API_KEY or OPENAI_BASE_URL in the server environment."
