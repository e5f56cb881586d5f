"""prompts_db: versioned geographic text prompts for MetaSegNet in one SQLite file (torch-free).

>>> from prompts_db import PromptStore
>>> PromptStore().current("Cfa", "loveda").text   # latest version, seeded offline on first use

See :mod:`prompts_db.store` (API), :mod:`prompts_db.knowledge` (offline prompts),
:mod:`prompts_db.llm` (paper §II-B LLM pipeline) and ``python -m prompts_db --help``.
"""

from prompts_db.errors import LLMError, PromptNotFoundError, PromptTextError
from prompts_db.knowledge import GENERIC, NO_TEXT, ZONE_CODES
from prompts_db.migrations import SCHEMA_VERSION
from prompts_db.resolve import ResolvedPrompt, resolve_prompt
from prompts_db.store import (
    MAX_TEXT_CHARS,
    PromptRecord,
    PromptStore,
    default_db_path,
    html_escape,
    prompt_for_location,
)
from prompts_db.tokens import TOKEN_BUDGET, count_tokens

__all__ = [
    "GENERIC",
    "NO_TEXT",
    "ZONE_CODES",
    "SCHEMA_VERSION",
    "MAX_TEXT_CHARS",
    "TOKEN_BUDGET",
    "PromptRecord",
    "ResolvedPrompt",
    "resolve_prompt",
    "PromptStore",
    "PromptTextError",
    "PromptNotFoundError",
    "LLMError",
    "count_tokens",
    "default_db_path",
    "html_escape",
    "prompt_for_location",
]
