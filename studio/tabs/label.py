"""Label tab: paint a ground truth (from a prediction or the current ground truth) and save it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from studio import experiments, services, views
from studio.session import SessionState
from studio.tabs.common import UI, Studio, class_set_of, legend_html, session, user_errors

TAB_ID = "label"
START_CHOICES = ["MetaSegNet prediction", "baseline prediction", "ground truth"]


def brush(class_set: str) -> gr.Brush:
    cs = class_set_of(class_set)
    colors = ["#{:02X}{:02X}{:02X}".format(*tuple(c)) for c in cs.colors]
    return gr.Brush(colors=colors, default_color=colors[0], color_mode="fixed", default_size=12)


@user_errors
def on_label_start(start: str, state: SessionState | None):
    state = session(state)
    if state.tile is None:
        raise gr.Error("Load a tile first.")
    p = state.prediction
    if start == "ground truth":
        if state.ground_truth is None:
            raise gr.Error("This tile has no ground truth yet; start from a prediction.")
        mask, cs_name = state.ground_truth, (state.ground_truth_class_set or (p.class_set if p else "openearthmap"))
    else:
        if p is None:
            raise gr.Error("Segment the tile first, then correct a prediction.")
        mask = p.metasegnet if start.startswith("MetaSegNet") else p.baseline
        cs_name = p.class_set
    from metaseg.visualize import colorize

    img = colorize(mask, class_set_of(cs_name))
    return gr.update(value={"background": img, "layers": [], "composite": img}, brush=brush(cs_name)), \
        legend_html(cs_name)


@user_errors
def on_label_save(editor: Any, state: SessionState | None):
    state = session(state)
    if state.tile is None or not state.tile_hash:
        raise gr.Error("Load a tile first.")
    painted = services.editor_composite(editor)
    if painted is None:
        raise gr.Error("Nothing painted yet: start from a prediction first.")
    h, w = state.tile.rgb.shape[:2]
    if painted.shape[:2] != (h, w):
        raise gr.Error(f"The painted mask is {painted.shape[1]}×{painted.shape[0]} but the tile is {w}×{h}.")
    cs = class_set_of(state.prediction.class_set if state.prediction else "openearthmap")
    index = services.painted_to_index(painted, cs, getattr(state.tile, "valid", None))
    row = services.save_label(index, cs, getattr(state.tile, "info", None), state.tile_hash,
                              services.label_dir() / state.tile_hash[:16])
    experiments.keep_labelled_tile(state.tile_path, Path(row["path"]).parent)  # evaluable in Experiments
    state.ground_truth, state.ground_truth_source = index, f"saved label #{row['id']}"
    state.ground_truth_class_set = cs.name
    from studio.tabs import locate

    return state, f"Saved label #{row['id']} ({cs.name} encoding); it is now this tile's ground truth.", \
        labels_table(state), row["path"], locate.gt_text(state)


def labels_table(state: SessionState) -> pd.DataFrame:
    return views.labels_table(services.get_store().labels(state.tile_hash) if state.tile_hash else [])


@user_errors
def on_labels_export(state: SessionState | None):
    state = session(state)
    if not state.tile_hash:
        raise gr.Error("Load a tile first.")
    out = services.zip_labels(state.tile_hash, state.output_path("labels.zip"))
    return labels_table(state), str(out)


def build(ctx: Studio) -> None:
    with gr.Tab("Label", id=TAB_ID):
        with gr.Row():
            start = gr.Radio(START_CHOICES, value=START_CHOICES[0], label="Start from")
            start_btn = gr.Button("Load into the editor", elem_id="label-start")
        label_legend = gr.HTML(legend_html("openearthmap"), js_on_load=None)
        editor = gr.ImageEditor(label="Paint with the class brushes", type="numpy", format="png",
                                image_mode="RGB", brush=brush("openearthmap"), sources=(),
                                layers=False, transforms=(), elem_id="editor", height=520)
        with gr.Row():
            save_label_btn = gr.Button("Save as ground truth", variant="primary", elem_id="label-save")
            export_btn = gr.Button("Export this tile's labels (zip)")
        label_status = gr.Markdown("")
        labels_df = gr.Dataframe(views.labels_table([]), label="Saved labels of this tile", interactive=False)
        label_file_out = gr.File(label="Label file", interactive=False, height=90)
    ctx.add(label_start=start, label_start_btn=start_btn, label_legend=label_legend, editor=editor,
            save_label_btn=save_label_btn, export_btn=export_btn, label_status=label_status,
            labels_df=labels_df, label_file_out=label_file_out)


def wire(ctx: Studio) -> None:
    ctx.label_start_btn.click(on_label_start, [ctx.label_start, ctx.state], [ctx.editor, ctx.label_legend], **UI)
    ctx.save_label_btn.click(on_label_save, [ctx.editor, ctx.state],
                             [ctx.state, ctx.label_status, ctx.labels_df, ctx.label_file_out, ctx.gt_status], **UI)
    ctx.export_btn.click(on_labels_export, [ctx.state], [ctx.labels_df, ctx.label_file_out], **UI)
