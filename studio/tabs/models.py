"""Models tab: which checkpoints this session uses; pick others among those the server offers.

The choice is the visitor's own (``SessionState.model_sources``): it never changes the models of
another session. A choice is checked against the operator's policy (:mod:`studio.policy`) and
loaded *before* it is stored, so a bad value leaves the session's models as they were.
"""

from __future__ import annotations

import gradio as gr
import pandas as pd

from metaseg.errors import MetasegError
from studio import models, policy
from studio.session import SessionState
from studio.tabs import teach
from studio.tabs.common import UI, Studio, session, user_errors

TAB_ID = "models"


def models_table(state: SessionState | None = None) -> pd.DataFrame:
    sources = state.model_sources if isinstance(state, SessionState) else None
    return pd.DataFrame(models.MODELS.describe(sources, shown=models.shown_source),
                        columns=["model", "source", "status"])


def offered_text() -> str:
    if not policy.visitor_models():
        return "On this server the operator chooses the models."
    names = ", ".join(f"`{n}`" for n in policy.offered_models())
    return (f"Checkpoints this server offers: {names}. Your choice applies to your session only; "
            "leave a field empty for the server's default.")


@user_errors
def on_load_checkpoints(src_a: str, src_b: str, state: SessionState | None = None):
    """Load checkpoints for this session's two slots (empty = the server default); a choice is
    checked and loaded before it is kept, so a bad one changes nothing (all or nothing: both slots
    keep what they served before)."""
    state = session(state)
    own = [state.workdir]
    try:
        chosen = {role: policy.model_choice(role, text, own)
                  for role, text in zip(models.ROLES, (src_a, src_b), strict=True)}
        for role in models.ROLES:  # load first: only sources that loaded are kept
            models.MODELS.get(role, chosen[role])
    except MetasegError as exc:
        raise gr.Error(f"{' '.join(str(exc).split())}. Check the path or hub id; the models in use did not "
                       "change.") from None
    a = models.MODELS.get("metasegnet", chosen["metasegnet"]).predictor.class_set
    b = models.MODELS.get("baseline", chosen["baseline"]).predictor.class_set
    if a is not None and b is not None and a.name != b.name:
        raise gr.Error(f"MetaSegNet predicts {a.name} classes but the baseline predicts {b.name}; "
                       "pick a matching pair")
    state.model_sources = {r: s for r, s in chosen.items() if s}
    gr.Info("Models loaded for your session.")
    return state, models_table(state)


def build(ctx: Studio) -> None:
    with gr.Tab("Models", id=TAB_ID) as tab:
        gr.Markdown("Default: the server's models (the shipped demo weights unless the operator set others).")
        offered = gr.Markdown(offered_text(), elem_id="models-offered")
        with gr.Accordion("Checkpoints", open=True):
            ck_a = gr.Textbox(label="MetaSegNet checkpoint (empty = default)", max_length=1024)
            ck_b = gr.Textbox(label="Baseline checkpoint (empty = default)", max_length=1024)
            ck_btn = gr.Button("Load checkpoints", interactive=policy.visitor_models())
        teach.build_models(ctx)
        ck_df = gr.Dataframe(value=models_table(), interactive=False, elem_id="models-table")
    ctx.add(models_tab=tab, ck_a=ck_a, ck_b=ck_b, ck_btn=ck_btn, ck_df=ck_df, models_offered=offered)


def wire(ctx: Studio) -> None:
    ctx.ck_btn.click(on_load_checkpoints, [ctx.ck_a, ctx.ck_b, ctx.state], [ctx.state, ctx.ck_df], **UI)
    ctx.models_tab.select(models_table, [ctx.state], [ctx.ck_df], **UI)
