"""MetaSegNet Studio — the Gradio app (Locate → Describe → Segment → Review → Label).

This file only assembles: each part of the page (its layout and its handlers) lives in its own
module under ``studio/tabs/`` (``locate`` panel, ``describe``, ``segment``, ``review``, ``label``,
``experiments``, ``models`` tabs, ``api`` endpoints); see ``studio.tabs.common.Studio`` for what they share. The
work happens in ``studio`` (per-user session, map, orchestration) which calls ``metaseg`` and
``prompts_db``.

Run: ``python app.py`` (or ``make run``). Environment: ``GRADIO_SERVER_NAME`` (127.0.0.1),
``GRADIO_SERVER_PORT`` (7860), ``METASEG_DB`` (prompt/run/label database),
``METASEG_CHECKPOINT_METASEGNET`` / ``METASEG_CHECKPOINT_BASELINE`` (checkpoint path or hub id;
default: the shipped demo weights), ``METASEG_MAX_UPLOAD_MB`` (200), ``METASEG_MAX_PIXELS``,
``METASEG_LABEL_DIR`` (saved labels; default ``labels/`` next to the database), ``OPENAI_API_KEY`` /
``OPENAI_BASE_URL`` (LLM prompt regeneration). What a public deployment lets visitors do (their
models, server folders, caps, sharing) is set by the variables in the README's "Operators and
visitors" table (read by ``studio.policy`` and ``studio.limits``).

API (gradio_client): ``/locate`` (file, lat, lon), ``/segment`` (file, prompt),
``/save_prompt`` (zone, class_set, text) — see the README.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import gradio as gr

from studio import limits
from studio.session import SessionState, session_ttl_s
from studio.tabs import api, describe, experiments, label, locate, models, review, segment
from studio.tabs.common import EXAMPLES, STATIC, Studio

log = logging.getLogger("metaseg.app")

CSS_PATH = STATIC / "studio.css"
#: the tabs, left to right (a new tab: a module with ``build(ctx)`` / ``wire(ctx)``, added here)
TABS = (describe, segment, review, label, experiments, models)


def build_demo() -> gr.Blocks:
    ttl = session_ttl_s()
    # Gradio's own cache (uploads, result copies): files older than the session TTL go, checked
    # every 10 minutes (and the whole cache at a restart)
    with gr.Blocks(title="MetaSegNet Studio", delete_cache=(600, int(ttl))) as demo:
        # a session's state (and folder) goes when its tab closes, or after ``ttl`` idle seconds
        # (API clients never close a tab)
        ctx = Studio(demo=demo, state=gr.State(None, time_to_live=ttl, delete_callback=_drop_session))
        gr.HTML(
            '<div class="ms-header"><h1>MetaSegNet Studio</h1><p>Climate-aware vision-language '
            "segmentation of remote-sensing tiles: locate a tile, read or edit the geographic prompt of "
            "its Köppen-Geiger zone, and compare MetaSegNet with a vision-only baseline.</p></div>",
            js_on_load=None,
        )
        locate.build(ctx)
        with gr.Tabs(elem_id="main-tabs") as ctx.tabs:
            for tab in TABS:
                tab.build(ctx)
        api.build(ctx)
        for module in (locate, *TABS, api):
            module.wire(ctx)
        ctx.finish()
    return demo


def _drop_session(state: SessionState | None) -> None:
    """Called by Gradio when a browser session ends: remove that session's files."""
    if isinstance(state, SessionState):
        from studio.teach import TEACHER

        TEACHER.cancel(state.session_id)  # a teaching job of a gone session stops and writes nothing
        state.cleanup()


def queue_kwargs() -> dict[str, Any]:
    """Queue settings: light events run 2 at a time each; inference events have their own limits
    (see ``studio.tabs.common.INFERENCE``); at most ``METASEG_QUEUE_MAX`` events wait (default 64)."""
    return {"default_concurrency_limit": 2, "max_size": limits.env_int("METASEG_QUEUE_MAX", 64)}


def launch_kwargs() -> dict[str, Any]:
    return {
        "server_name": os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        "server_port": int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        "max_file_size": f"{limits.max_upload_mb()}mb",
        "css_paths": [CSS_PATH] if CSS_PATH.exists() else None,
        "allowed_paths": [str(EXAMPLES)],
    }


demo = build_demo()

if __name__ == "__main__":
    logging.basicConfig(level=os.environ.get("METASEG_LOG_LEVEL", "INFO"))
    demo.queue(**queue_kwargs()).launch(**launch_kwargs())
