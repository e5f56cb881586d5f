"""LLM prompt generation (paper §II-B) through any OpenAI-compatible chat-completions endpoint.

Pipeline: climate zone → one question per class of the class set (our template: shape, colour
and texture of the class in a remote-sensing image of that climate, and what usually lies next
to it; each question names the zone code and its description and the per-class word budget) →
one chat completion per class → answers merged into one prompt (a short lead naming the zone,
then ``"<Class>: <answer>"`` per class) that fits the 250-token budget of the text encoder.

Configuration (environment, overridable per call):
  * ``OPENAI_API_KEY`` — required for api.openai.com and most proxies.
  * ``OPENAI_BASE_URL`` — e.g. ``http://localhost:11434/v1`` (Ollama) or ``http://host:8000/v1``
    (vLLM). A base URL **without** a key is allowed for such local servers: the client then sends
    the placeholder key ``"no-key"``. With neither set, :class:`LLMError` explains what to set.
  * ``METASEG_LLM_MODEL`` — model name, default ``gpt-4o-mini``.

Robustness: per-request timeout, retries with exponential backoff on timeouts, connection
errors, 429 and 5xx (our own loop so tests can make the backoff short; the client's own retries
are off). Every answer is cached in the ``qa`` table keyed by (model, question): the same
question is never paid for twice. Answers are untrusted text and stored verbatim; the merged
prompt only collapses whitespace and trims at sentence/word boundaries by real token count.
The API key is never stored or logged.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from prompts_db.errors import LLMError
from prompts_db.knowledge import NO_TEXT, class_names, normalize_class_set, normalize_zone, zone_info
from prompts_db.models import QA, utc_now
from prompts_db.tokens import TOKEN_BUDGET, count_tokens, trim_to_budget

if TYPE_CHECKING:
    from prompts_db.store import PromptRecord, PromptStore

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MAX_RETRIES = 3
DEFAULT_BACKOFF_S = 1.0
#: Placeholder key sent to keyless local servers (Ollama, vLLM) when only a base URL is set.
NO_KEY_PLACEHOLDER = "no-key"
#: Rough words per token for English prose in a BERT vocabulary (used to phrase the budget).
WORDS_PER_TOKEN = 0.7

SYSTEM_MESSAGE = (
    "You are an expert in remote sensing and physical geography. You describe how land-cover "
    "classes look from above in aerial and satellite images. Reply with plain prose only: no "
    "lists, no headings, no preamble."
)

QUESTION_TEMPLATE = (
    "Consider a high-resolution remote sensing image of a place in Köppen-Geiger climate zone "
    "{code} ({name}; {description}). How does the land-cover class '{class_name}' look there: its "
    "typical shape, colour and texture, and which geo-objects usually lie next to it? "
    "Answer in at most {words} words."
)


@dataclass(frozen=True)
class LLMConfig:
    """Endpoint settings. ``api_key`` is kept out of ``repr`` so it never reaches logs."""

    model: str = DEFAULT_MODEL
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    timeout: float = DEFAULT_TIMEOUT_S
    max_retries: int = DEFAULT_MAX_RETRIES
    backoff: float = DEFAULT_BACKOFF_S

    @classmethod
    def from_env(cls, **overrides: Any) -> LLMConfig:
        """Settings from ``OPENAI_API_KEY``/``OPENAI_BASE_URL``/``METASEG_LLM_MODEL`` plus overrides."""
        values: dict[str, Any] = {
            "model": os.environ.get("METASEG_LLM_MODEL") or DEFAULT_MODEL,
            "base_url": os.environ.get("OPENAI_BASE_URL") or None,
            "api_key": os.environ.get("OPENAI_API_KEY") or None,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def check(self) -> None:
        """Raise LLMError when neither a key nor a base URL is configured."""
        if not self.api_key and not self.base_url:
            raise LLMError(
                "no LLM configured: set OPENAI_API_KEY (OpenAI or a proxy), or OPENAI_BASE_URL for a "
                "local server such as Ollama or vLLM; without them use the offline prompt (no --llm)"
            )


@dataclass
class GenerationResult:
    """Outcome of one pipeline run: the saved prompt and what it cost."""

    record: PromptRecord
    questions: list[str]
    qa_ids: list[int]
    requests: int  # chat completions actually sent (cache hits excluded; retries excluded)
    cached: int  # answers taken from the qa cache
    truncated: list[str]  # classes whose answer was trimmed to fit the budget


def lead_sentence(code: str) -> str:
    """Short opening that names the zone (kept small: the answers carry the content)."""
    info = zone_info(code)
    return f"Köppen climate {info.code} ({info.name})."


def per_class_token_budget(code: str, n_classes: int, budget: int = TOKEN_BUDGET) -> int:
    """Tokens each class answer may use so that lead + all answers fit ``budget``."""
    lead = count_tokens(lead_sentence(code)) - 2  # specials are counted once for the whole text
    return max(8, (budget - 2 - lead) // max(1, n_classes))


def build_questions(zone: str, class_set: str, budget: int = TOKEN_BUDGET) -> list[tuple[str, str]]:
    """``(class_name, question)`` per class of ``class_set`` for climate ``zone``."""
    code = normalize_zone(zone)
    names = class_names(class_set)
    info = zone_info(code)
    words = max(5, int(per_class_token_budget(code, len(names), budget) * WORDS_PER_TOKEN) - 2)
    description = info.description.rstrip(".") or info.name
    return [
        (
            n,
            QUESTION_TEMPLATE.format(
                code=info.code, name=info.name, description=description, class_name=n, words=words
            ),
        )
        for n in names
    ]


def _class_label(name: str) -> str:
    return name.replace("_", " ").strip().capitalize()


def merge_answers(
    code: str, answers: list[tuple[str, str]], budget: int = TOKEN_BUDGET
) -> tuple[str, list[str]]:
    """Merge ``(class_name, answer)`` pairs into one prompt within ``budget`` tokens.

    Each answer is whitespace-collapsed and trimmed (sentence, then word boundaries) to its
    per-class share; a final overall trim guards the total. Returns ``(text, truncated_classes)``.
    """
    per_class = per_class_token_budget(code, len(answers), budget)
    parts = [lead_sentence(code)]
    truncated: list[str] = []
    for name, answer in answers:
        body = " ".join(str(answer).split()) or "no description."
        sentence = f"{_class_label(name)}: {body}"
        if not sentence.endswith((".", "!", "?")):
            sentence += "."
        # +2: trim_to_budget counts [CLS]/[SEP], which the merged text pays only once
        sentence, cut = trim_to_budget(sentence, per_class + 2)
        if cut:
            truncated.append(name)
        parts.append(sentence)
    text, cut = trim_to_budget(" ".join(parts), budget)
    if cut:
        truncated.append("(total)")
    return text, truncated


def _make_client(cfg: LLMConfig) -> Any:
    from openai import OpenAI  # lazy: the store must import fast

    return OpenAI(
        api_key=cfg.api_key or NO_KEY_PLACEHOLDER,
        base_url=cfg.base_url,
        timeout=cfg.timeout,
        max_retries=0,  # our own loop below (short, testable backoff)
    )


def _clean_answer(answer: Any) -> str | None:
    """An LLM answer as storable text: control characters (NUL, ESC, ...) dropped except newlines and
    tabs, lone surrogates replaced. Without this a bad answer would be cached in the QA table and
    break every later generation for the same question."""
    if answer is None:
        return None
    text = str(answer).encode("utf-8", "replace").decode("utf-8")
    return "".join(c for c in text if c in "\n\t" or not (ord(c) < 32 or ord(c) == 127))


def ask(client: Any, cfg: LLMConfig, question: str) -> tuple[str, dict[str, int | None], float]:
    """One chat completion with retries. Returns ``(answer, usage, latency_s)``.

    Raises:
        LLMError: timeout, connection or HTTP error after all retries, or an empty answer.
    """
    import openai

    attempts = cfg.max_retries + 1
    for attempt in range(attempts):
        start = time.perf_counter()
        try:
            resp = client.chat.completions.create(
                model=cfg.model,
                messages=[
                    {"role": "system", "content": SYSTEM_MESSAGE},
                    {"role": "user", "content": question},
                ],
                temperature=0.2,
            )
            latency = time.perf_counter() - start
            try:
                answer = resp.choices[0].message.content if resp.choices else None
            except (AttributeError, IndexError, TypeError):  # e.g. an HTML page from a proxy
                raise LLMError(
                    f"the LLM endpoint {cfg.base_url or 'api.openai.com'} did not return a chat completion"
                ) from None
            answer = _clean_answer(answer)
            if not answer or not answer.strip():
                raise LLMError(f"the LLM ({cfg.model}) returned an empty answer")
            usage = getattr(resp, "usage", None)
            return (
                answer,
                {
                    "prompt_tokens": getattr(usage, "prompt_tokens", None),
                    "completion_tokens": getattr(usage, "completion_tokens", None),
                    "total_tokens": getattr(usage, "total_tokens", None),
                },
                latency,
            )
        except (ValueError, RecursionError, openai.APIResponseValidationError):  # truncated/invalid JSON body
            raise LLMError(
                f"the LLM endpoint {cfg.base_url or 'api.openai.com'} returned a malformed response"
            ) from None
        except openai.APITimeoutError:
            reason = f"the LLM request timed out after {cfg.timeout:g} s"
        except openai.APIConnectionError:
            reason = f"cannot reach the LLM endpoint {cfg.base_url or 'api.openai.com'}"
        except openai.APIStatusError as err:
            if err.status_code in (401, 403):
                raise LLMError(f"the LLM endpoint rejected the API key (HTTP {err.status_code})") from None
            if err.status_code != 429 and err.status_code < 500:
                raise LLMError(
                    f"the LLM endpoint returned HTTP {err.status_code} for model {cfg.model}"
                ) from None
            reason = f"the LLM endpoint returned HTTP {err.status_code}"
        if attempt + 1 < attempts:
            delay = cfg.backoff * (2**attempt)
            log.warning("%s; retry %d/%d in %.2f s", reason, attempt + 1, cfg.max_retries, delay)
            time.sleep(delay)
    raise LLMError(f"{reason} ({attempts} attempt{'s' if attempts > 1 else ''})")


def _cached(store: PromptStore, model: str, question: str) -> QA | None:
    with Session(store.reader) as s:
        row = s.scalars(select(QA).where(QA.model == model, QA.question == question)).first()
        if row is not None:
            s.expunge(row)
        return row


def _save_qa(store: PromptStore, **values: Any) -> int:
    try:
        with Session(store.engine) as s, s.begin():
            row = QA(created_at=utc_now(), **values)
            s.add(row)
            s.flush()
            return row.id
    except IntegrityError:  # another process cached the same question meanwhile
        hit = _cached(store, values["model"], values["question"])
        if hit is None:  # pragma: no cover
            raise
        return hit.id


def generate(
    store: PromptStore,
    zone: str,
    class_set: str,
    parent_id: int | None = None,
    author: str | None = None,
    client: Any = None,
    **config: Any,
) -> GenerationResult:
    """Run the §II-B pipeline and save the merged prompt as a new ``llm:<model>`` version.

    Args:
        store: the prompt store (QA cache and destination).
        zone: Köppen code. class_set: class-set name.
        parent_id: version the new prompt derives from (default: the current one).
        client: an ``openai.OpenAI``-like client (default: built from the config).
        **config: LLMConfig overrides (model, base_url, api_key, timeout, max_retries, backoff).
    """
    code = normalize_zone(zone)
    if code in ("generic", NO_TEXT):
        raise LLMError(f"LLM prompts are generated for a climate zone, not {code!r}")
    class_set = normalize_class_set(class_set)
    cfg = LLMConfig.from_env(**config)
    questions = build_questions(code, class_set)
    answers: list[tuple[str, str]] = []
    qa_ids: list[int] = []
    requests = cached = 0
    api = None
    for name, question in questions:
        hit = _cached(store, cfg.model, question)
        if hit is not None:
            cached += 1
            answers.append((name, hit.answer))
            qa_ids.append(hit.id)
            continue
        if api is None:
            cfg.check()
            api = client if client is not None else _make_client(cfg)
        answer, usage, latency = ask(api, cfg, question)
        requests += 1
        qa_ids.append(
            _save_qa(
                store,
                zone=code,
                class_set=class_set,
                class_name=name,
                question=question,
                answer=answer,
                model=cfg.model,
                latency_s=latency,
                **usage,
            )
        )
        answers.append((name, answer))
    text, truncated = merge_answers(code, answers)
    if truncated:
        log.warning("LLM answers trimmed to fit %d tokens: %s", TOKEN_BUDGET, ", ".join(truncated))
    notes = f"{requests} requests, {cached} cached answers"
    if truncated:
        notes += f"; trimmed to the {TOKEN_BUDGET}-token budget: {', '.join(truncated)}"
    if parent_id is None:
        parent_id = store.current(code, class_set).id
    record = store.save(
        code,
        class_set,
        text,
        source=f"llm:{cfg.model}",
        parent_id=parent_id,
        author=author,
        notes=notes,
        qa_ids=qa_ids,
    )
    return GenerationResult(record, [q for _, q in questions], qa_ids, requests, cached, truncated)


def generate_prompt(store: PromptStore, zone: str, class_set: str, **kwargs: Any) -> PromptRecord:
    """Like :func:`generate` but returns only the saved :class:`PromptRecord`."""
    return generate(store, zone, class_set, **kwargs).record
