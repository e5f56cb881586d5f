"""Models tab: which checkpoints the app serves; load others by local path or hub id."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from metaseg.errors import MetasegError
from studio import services
from studio.tabs.common import UI, Studio, user_errors

TAB_ID = "models"


def models_table() -> pd.DataFrame:
    return pd.DataFrame(services.MODELS.describe(), columns=["model", "source", "status"])


@user_errors
def on_load_checkpoints(src_a: str, src_b: str):
    """Load checkpoints (path or hub id) for both slots now; empty = back to the default source.

    All or nothing: when one fails, both slots go back to what they served before."""
    previous = {role: services.MODELS.chosen_source(role) for role in services.ROLES}
    try:
        services.MODELS.set_source("metasegnet", src_a)
        services.MODELS.set_source("baseline", src_b)
        for role in services.ROLES:
            services.MODELS.get(role)
    except MetasegError as exc:
        for role, source in previous.items():
            services.MODELS.set_source(role, source)
        raise gr.Error(f"{' '.join(str(exc).split())}. Check the path or hub id; the models in use did not "
                       "change.") from None
    gr.Info("Models loaded.")
    return models_table()


def build(ctx: Studio) -> None:
    with gr.Tab("Models", id=TAB_ID) as tab:
        gr.Markdown("Default: the shipped demo weights. Load other checkpoints by local path or "
                    "Hugging Face hub id (or set METASEG_CHECKPOINT_METASEGNET / _BASELINE).")
        with gr.Accordion("Checkpoints", open=True):
            ck_a = gr.Textbox(label="MetaSegNet checkpoint (path or hub id; empty = default)")
            ck_b = gr.Textbox(label="Baseline checkpoint (path or hub id; empty = default)")
            ck_btn = gr.Button("Load checkpoints")
        ck_df = gr.Dataframe(value=models_table(), interactive=False)
    ctx.add(models_tab=tab, ck_a=ck_a, ck_b=ck_b, ck_btn=ck_btn, ck_df=ck_df)


def wire(ctx: Studio) -> None:
    ctx.ck_btn.click(on_load_checkpoints, [ctx.ck_a, ctx.ck_b], [ctx.ck_df], **UI)
    ctx.models_tab.select(models_table, None, [ctx.ck_df], **UI)
