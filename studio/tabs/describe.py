"""Describe tab: read, edit, save, restore and (with an LLM endpoint) regenerate the zone's prompt.

Registers ``prompt`` (the prompt text box, also read by Segment), ``prompt_info``, ``history`` and
``history_df``; :func:`prompt_panel` gives their values for the session's zone and class set.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd

from metaseg.errors import MetasegError
from prompts_db.resolve import resolve_prompt
from studio import placement, prompt_store, views
from studio.session import SessionState
from studio.tabs.common import UI, Studio, session, user_errors

TAB_ID = "describe"
HISTORY_COLS = ["version", "id", "source", "tokens", "created", "text (from where it differs from the current)"]
#: characters of a version shown in the history table
SNIPPET_CHARS = 120


def diff_snippet(text: str, current: str, width: int = SNIPPET_CHARS) -> str:
    """A version's text as the table shows it: its start when that already differs from the
    current version, else ``…`` and the text from a little before the first difference — so
    versions that differ only late in the text do not look identical. The current version
    itself (same text) shows its start."""
    text, current = str(text or ""), str(current or "")
    if text == current:
        return text[:width] + ("…" if len(text) > width else "")
    i = next((k for k, (a, b) in enumerate(zip(text, current, strict=False)) if a != b), min(len(text), len(current)))
    start = max(0, i - 30) if i > width - 40 else 0
    piece = text[start:start + width] or "(ends here: the current version goes on)"
    return ("…" if start else "") + piece + ("…" if start + width < len(text) else "")


def zone_label(state: SessionState) -> str:
    code = placement.zone_code(state.location)
    return code or "generic (no climate zone)"


def prompt_panel(state: SessionState, class_set: str):
    """(prompt text, info html, history dropdown update, history table) for the current zone."""
    store = prompt_store.get_store()
    rec = resolve_prompt(store, class_set, zone=placement.zone_code(state.location)).record
    state.prompt_id = rec.id
    hist = store.history(rec.id)
    choices = [(f"v{r.version} · {r.source} · {r.created_at[:19]} (id {r.id})", r.id) for r in hist]
    table = pd.DataFrame(
        [[r.version, r.id, r.source, r.token_count, r.created_at[:19], diff_snippet(r.text, _reference(r, rec, hist))]
         for r in hist],
        columns=HISTORY_COLS,
    )
    info = views.prompt_info_html(rec, zone_label(state))
    return rec.text, info, gr.update(choices=choices, value=rec.id), table


def _reference(r: Any, current: Any, hist: list[Any]) -> str:
    """What a history row is compared with: the current version; the current one itself with the
    version before it (so it, too, shows what sets it apart)."""
    if r.id != current.id:
        return current.text
    older = [h for h in hist if h.id != current.id and h.version < current.version]
    return max(older, key=lambda h: h.version).text if older else current.text


def _prompt_id(value: Any) -> int:
    """A history selection as a prompt id; anything but a whole positive number is refused."""
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or int(text) <= 0:
        raise gr.Error(f"'{text[:40]}' is not a prompt version id: pick a row in the history.")
    return int(text)


# --------------------------------------------------------------------------- handlers
def on_prompt_edit(text: str):
    from prompts_db import MAX_TEXT_CHARS, count_tokens

    text = str(text or "")
    if len(text) > MAX_TEXT_CHARS:  # never tokenise megabytes: the models and the store refuse them anyway
        return (f'<span class="ms-tokens ms-over">{len(text):,} characters: over the {MAX_TEXT_CHARS:,}-character '
                "limit</span>")
    return views.token_html(count_tokens(text))


@user_errors
def on_class_set(class_set: str, state: SessionState | None):
    state = session(state)
    text, info, dd, table = prompt_panel(state, class_set)
    return state, text, info, dd, table


@user_errors
def on_save_prompt(text: str, class_set: str, state: SessionState | None):
    state = session(state)
    prompt_store.check_prompt_save(state.session_id)
    store = prompt_store.get_store()
    parent = state.prompt_id
    try:
        parent_ok = parent is not None and store.get(parent).class_set == class_set
    except MetasegError:
        parent_ok = False
    rec = store.save(placement.zone_code(state.location), class_set, text, source="user",
                     parent_id=parent if parent_ok else None)
    gr.Info(f"Saved as version {rec.version}.")
    return (state, *prompt_panel(state, class_set))


@user_errors
def on_pick_version(prompt_id: Any, class_set: str, state: SessionState | None):
    """A version picked in the history: its full text (read-only; Restore makes it current)."""
    if prompt_id in (None, ""):
        return ""
    rec = prompt_store.get_store().get(_prompt_id(prompt_id))
    current = resolve_prompt(prompt_store.get_store(), class_set,
                             zone=placement.zone_code(session(state).location)).record
    head = f"v{rec.version} · {rec.source} · {rec.created_at[:19]}"
    head += " (the current version)" if rec.id == current.id else " — Restore makes it the current version"
    return gr.update(value=rec.text, label=head)


@user_errors
def on_restore(prompt_id: Any, class_set: str, state: SessionState | None):
    state = session(state)
    if prompt_id in (None, ""):
        raise gr.Error("Pick a version in the history first.")
    pid = _prompt_id(prompt_id)
    prompt_store.check_prompt_save(state.session_id)
    rec = prompt_store.get_store().restore(pid)
    gr.Info(f"Restored as version {rec.version}.")
    return (state, *prompt_panel(state, class_set))


@user_errors
def on_regenerate(class_set: str, state: SessionState | None):
    state = session(state)
    ok, why = prompt_store.llm_status()
    if not ok:
        raise gr.Error(why)
    prompt_store.check_prompt_save(state.session_id)
    rec = prompt_store.get_store().generate(placement.zone_code(state.location), class_set, llm=True)
    gr.Info(f"LLM prompt saved as version {rec.version}.")
    return (state, *prompt_panel(state, class_set))


def regen_button_state():
    """The Regenerate button and its hint from the environment *now* (read at page load, not import)."""
    ok, why = prompt_store.llm_status()
    label = "Regenerate with LLM" if ok else "Regenerate with LLM (not configured)"
    return gr.update(value=label, interactive=ok), why


# --------------------------------------------------------------------------- layout
def build(ctx: Studio) -> None:
    with gr.Tab("Describe", id=TAB_ID):
        prompt = gr.Textbox(label="Geographic prompt", lines=6, max_lines=14, elem_id="prompt")
        with gr.Row(equal_height=True):
            prompt_info = gr.HTML("", elem_id="prompt-info", js_on_load=None, scale=3)
            tokens = gr.HTML("", elem_id="tokens", js_on_load=None, scale=1)
        with gr.Row():
            save_btn = gr.Button("Save as new version", variant="primary", elem_id="save-prompt")
            regen_btn = gr.Button("Regenerate with LLM", interactive=False, elem_id="regen")
        regen_hint = gr.Markdown("", elem_classes=["ms-hint"], elem_id="regen-hint")
        with gr.Row():
            history = gr.Dropdown(label="History", choices=[], elem_id="history", scale=3)
            restore_btn = gr.Button("Restore this version", elem_id="restore", scale=1)
        version_text = gr.Textbox(label="Text of the version picked in the history", lines=4, max_lines=14,
                                  interactive=False, elem_id="version-text")
        history_df = gr.Dataframe(pd.DataFrame(columns=HISTORY_COLS), label="Versions", interactive=False,
                                  wrap=True, elem_id="history-table",
                                  column_widths=["80px", "60px", "120px", "70px", "170px", "auto"])
    ctx.add(prompt=prompt, prompt_info=prompt_info, history=history, history_df=history_df, tokens=tokens,
            save_btn=save_btn, regen_btn=regen_btn, regen_hint=regen_hint, restore_btn=restore_btn,
            version_text=version_text)


def panel_outputs(ctx: Studio) -> list[Any]:
    """Outputs of :func:`prompt_panel` (after the state)."""
    return [ctx.prompt, ctx.prompt_info, ctx.history, ctx.history_df]


def wire(ctx: Studio) -> None:
    panel = [ctx.state, *panel_outputs(ctx)]
    ctx.class_set.change(on_class_set, [ctx.class_set, ctx.state], panel, **UI)
    ctx.prompt.change(on_prompt_edit, [ctx.prompt], [ctx.tokens], **UI, show_progress="hidden")
    ctx.save_btn.click(on_save_prompt, [ctx.prompt, ctx.class_set, ctx.state], panel, **UI)
    ctx.history.change(on_pick_version, [ctx.history, ctx.class_set, ctx.state], [ctx.version_text], **UI,
                       show_progress="hidden")
    ctx.restore_btn.click(on_restore, [ctx.history, ctx.class_set, ctx.state], panel, **UI)
    ctx.regen_btn.click(on_regenerate, [ctx.class_set, ctx.state], panel, **UI)
    ctx.demo.load(regen_button_state, None, [ctx.regen_btn, ctx.regen_hint], **UI)
