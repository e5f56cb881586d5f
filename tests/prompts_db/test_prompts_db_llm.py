"""LLM pipeline (paper §II-B) against a real loopback OpenAI-compatible server via the openai client."""

from __future__ import annotations

import logging
import time

import pytest

from prompts_db import TOKEN_BUDGET, LLMError, PromptStore, count_tokens
from prompts_db.knowledge import class_names
from prompts_db.llm import build_questions, generate, merge_answers
from tests.fixtures.openai_server import FakeOpenAIServer

FAST = {"backoff": 0.01, "timeout": 5.0}


@pytest.fixture
def store(tmp_path):
    s = PromptStore(tmp_path / "llm.sqlite")
    yield s
    s.close()


@pytest.fixture
def server():
    with FakeOpenAIServer() as srv:
        yield srv


def test_one_request_per_class_each_naming_the_zone(store, server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-key")
    monkeypatch.setenv("METASEG_LLM_MODEL", "tiny-model")
    parent = store.current("BWh", "openearthmap")
    res = generate(store, "BWh", "openearthmap", **FAST)
    names = class_names("openearthmap")
    assert res.requests == len(names) == len(server.requests) == 8 and res.cached == 0
    for name, body in zip(names, server.requests, strict=True):
        assert body["model"] == "tiny-model"
        assert body["messages"][0]["role"] == "system"
        question = body["messages"][-1]["content"]
        assert "BWh" in question and f"'{name}'" in question
        assert (
            "shape" in question and "colour" in question and "texture" in question and "next to" in question
        )
        assert "Answer in at most" in question
    assert server.auth_headers[0] == "Bearer sk-env-key"
    rec = res.record
    assert rec.source == "llm:tiny-model" and rec.parent_id == parent.id and rec.version == 2
    for name in names:  # every answer merged, in class order
        assert f"In BWh the {name} looks distinctive." in rec.text
    assert rec.text.index("bareland looks") < rec.text.index("building looks")
    assert store.current("BWh", "openearthmap").id == rec.id
    assert rec.token_count == count_tokens(rec.text) <= TOKEN_BUDGET


def test_answers_cached_no_second_payment(store, server):
    first = generate(store, "Cfa", "loveda", base_url=server.base_url, api_key="k", **FAST)
    n = len(server.requests)
    second = generate(store, "Cfa", "loveda", base_url=server.base_url, api_key="k", **FAST)
    assert len(server.requests) == n == 7
    assert second.requests == 0 and second.cached == 7 and second.qa_ids == first.qa_ids
    assert second.record.text == first.record.text and second.record.version == first.record.version + 1
    # cache hits need no endpoint at all (no key, no URL configured)
    third = generate(store, "Cfa", "loveda", **FAST)
    assert third.cached == 7
    # a different model is a different cache key
    generate(store, "Cfa", "loveda", base_url=server.base_url, api_key="k", model="other", **FAST)
    assert len(server.requests) == 14


def test_server_error_is_retried_then_succeeds(store):
    with FakeOpenAIServer(fail_next=2) as srv:
        res = generate(store, "Af", "potsdam", base_url=srv.base_url, api_key="k", max_retries=3, **FAST)
    assert srv.failures == 2 and res.requests == 6 and len(srv.requests) == 6


def test_persistent_server_error_is_a_clear_error(store):
    with FakeOpenAIServer(fail_next=100) as srv:
        with pytest.raises(LLMError, match=r"HTTP 500.*3 attempts"):
            generate(store, "Af", "potsdam", base_url=srv.base_url, api_key="k", max_retries=2, **FAST)
    assert store.current("Af", "potsdam").version == 1  # nothing half-saved


def test_slow_response_times_out_clearly(store):
    with FakeOpenAIServer(delay_s=1.5) as srv:
        t0 = time.perf_counter()
        with pytest.raises(LLMError, match="timed out after 0.2 s"):
            generate(
                store,
                "Dfb",
                "potsdam",
                base_url=srv.base_url,
                api_key="k",
                timeout=0.2,
                max_retries=1,
                backoff=0.01,
            )
        assert time.perf_counter() - t0 < 1.4


def test_no_key_and_no_url_is_a_clear_error(store):
    with pytest.raises(LLMError, match="OPENAI_API_KEY"):
        generate(store, "Dfb", "potsdam", **FAST)


def test_base_url_without_key_is_allowed_for_local_servers(store, server):
    res = generate(store, "ET", "loveda", base_url=server.base_url, **FAST)
    assert res.requests == 7 and server.auth_headers[0] == "Bearer no-key"


def test_long_answers_trimmed_to_budget_and_reported(store, caplog):
    with FakeOpenAIServer(answer_words=300) as srv:
        res = generate(store, "Csa", "openearthmap", base_url=srv.base_url, api_key="k", **FAST)
    rec = res.record
    assert count_tokens(rec.text) <= TOKEN_BUDGET and rec.token_count <= TOKEN_BUDGET
    assert set(res.truncated) >= set(class_names("openearthmap"))
    assert "trimmed" in rec.notes
    # the QA table keeps the untrusted answer verbatim (full length)
    import sqlite3

    con = sqlite3.connect(store.path)
    answers = [r[0] for r in con.execute("select answer from qa")]
    assert len(answers) == 8 and all(len(a.split()) >= 290 for a in answers)
    latency, tokens = con.execute("select latency_s, total_tokens from qa limit 1").fetchone()
    assert latency >= 0 and tokens == 70
    links = con.execute("select count(*) from prompt_qa where prompt_id = ?", (rec.id,)).fetchone()[0]
    assert links == 8
    con.close()


def test_merge_respects_budget_with_word_level_cut():
    answers = [(n, "x " * 500) for n in class_names("potsdam")]  # no sentence boundary at all
    text, truncated = merge_answers("Cfb", answers)
    assert count_tokens(text) <= TOKEN_BUDGET and len(truncated) >= 6
    assert text.startswith("Köppen climate Cfb")


def test_questions_name_zone_code_and_description():
    qs = build_questions("Dfc", "loveda")
    assert len(qs) == 7
    for _name, q in qs:
        assert "Dfc" in q and "(" in q and len(q) > 150


def test_api_key_never_stored_or_logged(store, caplog):
    secret = "sk-test-SECRET-do-not-store-4242"
    caplog.set_level(logging.DEBUG)
    with FakeOpenAIServer(fail_next=1) as srv:
        res = generate(store, "Cwa", "potsdam", base_url=srv.base_url, api_key=secret, **FAST)
    assert srv.auth_headers[-1] == f"Bearer {secret}"  # the key was really used
    assert secret not in caplog.text and secret not in repr(res)
    store.close()
    for f in store.path.parent.glob(store.path.name + "*"):  # main file, -wal, -shm
        assert secret.encode() not in f.read_bytes(), f


def test_zone_generic_or_none_rejected(store):
    with pytest.raises(LLMError):
        generate(store, "generic", "loveda", base_url="http://127.0.0.1:9/v1")
