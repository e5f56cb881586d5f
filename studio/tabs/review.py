"""Review tab: compare both masks with the ground truth (uploaded, painted or shipped with an example).

Scores every segmentation automatically when the tile has a ground truth (reacts to ``segmented``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from studio import labels, prompt_store, scoring, views
from studio.session import SessionState
from studio.tabs import teach
from studio.tabs.common import (
    TILE_TYPES,
    UI,
    Studio,
    as_uploaded,
    class_set_of,
    image_file,
    path_of,
    session,
    user_errors,
)

TAB_ID = "review"
IOU_COLS = ["class", "MetaSegNet IoU %", "baseline IoU %", "ΔIoU"]
COMPARE_COLS = ["run", "when", "model", "prompt v", "prompt source", "zone", "mIoU %", "ΔmIoU"]


@user_errors
def on_label_upload(file: Any, state: SessionState | None, class_set: str | None = None):
    """A label in the official encoding of the models' class set (before segmenting: of the class
    set chosen in the Locate panel)."""
    state = session(state)
    src = path_of(file)
    if src is None:
        return state, gr.skip()
    if state.tile is None:
        raise gr.Error("Load the tile before its label.")
    labels.ensure_readable(src)
    path = state.import_file(src, stem="label")
    cs_name = state.prediction.class_set if state.prediction else (class_set or "openearthmap")
    with as_uploaded(path, src):
        got = scoring.open_label(path, class_set_of(cs_name), state.tile.rgb.shape[:2])
    state.ground_truth, state.ground_truth_class_set = got.index, cs_name
    state.ground_truth_source = "uploaded label"
    if got.note and "look like class indices" in got.note:  # scoring it would silently give ~0
        gr.Warning(f"{Path(src).name}: {got.note}")
        return state, f"⚠️ Ground truth loaded from {Path(src).name}, but {got.note}."
    how = got.note or f"{cs_name} encoding"
    return state, f"Ground truth loaded (uploaded label, {how})."


@user_errors
def on_review(state: SessionState | None):
    from metaseg.visualize import ONLY_ONE_RIGHT_LEGEND, only_one_right_map

    state = session(state)
    p = state.prediction
    if p is None:
        raise gr.Error("Segment the tile first.")
    if state.ground_truth is None:
        raise gr.Error("No ground truth: upload a label here or paint one in the Label tab.")
    cs = class_set_of(p.class_set)
    if state.ground_truth_class_set and state.ground_truth_class_set != cs.name:
        raise gr.Error(f"The ground truth is a {state.ground_truth_class_set} label but the models predict "
                       f"{cs.name} classes: load {cs.name} models or a {cs.name} label.")
    rev = scoring.review(p.metasegnet, p.baseline, state.ground_truth, cs)
    scoring.log_review(state.tile_hash, rev, cs.name, p.prompt_id, p.checkpoint_ids)
    iou = views.iou_table(rev, cs.names)
    bars = views.iou_chart(rev, cs.names)
    only = only_one_right_map(views.display_image(p.metasegnet), views.display_image(p.baseline),
                              views.display_image(state.ground_truth))
    legend = views.legend_items_html(
        [(n.replace("A", "MetaSegNet").replace("B", "baseline"), c) for n, c in ONLY_ONE_RIGHT_LEGEND]
    )
    out = state.output_path("results")  # new files: identical pictures of two visitors never share one
    bars, only = image_file(bars, out, "iou"), image_file(only, out, "only-one-right")
    return (views.metrics_html(rev, state.ground_truth_source), iou, bars, only, legend,
            views.compare_table(prompt_store.get_store().compare_prompt_versions(state.tile_hash)))


def auto_review(state: SessionState | None):
    """After a segmentation: score it when the tile has a ground truth, else leave the tab as it is."""
    state = session(state)
    if state.ground_truth is None or state.prediction is None:
        return (gr.skip(),) * 6
    return on_review(state)


def clear():
    return "", pd.DataFrame(columns=IOU_COLS), None, None, "", pd.DataFrame(columns=COMPARE_COLS)


def build(ctx: Studio) -> None:
    with gr.Tab("Review", id=TAB_ID):
        with gr.Row():
            label_file = gr.File(label="Ground-truth label (official encoding of the class set)",
                                 file_types=TILE_TYPES, type="filepath", elem_id="label-file")
            review_btn = gr.Button("Compare with ground truth", variant="primary", elem_id="review-btn")
        metrics = gr.HTML("", elem_id="metrics", js_on_load=None)
        with gr.Row():
            iou_df = gr.Dataframe(pd.DataFrame(columns=IOU_COLS), label="Per-class IoU", interactive=False,
                                  elem_id="iou-table")
            bar = gr.Image(label="IoU per class", interactive=False, format="png", elem_id="iou-bars")
        with gr.Row():
            only_img = gr.Image(label="Where only one model is right", interactive=False, format="png",
                                elem_id="only-one")
            with gr.Column():
                only_legend = gr.HTML("", js_on_load=None)
                compare_df = gr.Dataframe(pd.DataFrame(columns=COMPARE_COLS),
                                          label="Runs on this tile (prompt versions compared)",
                                          interactive=False, elem_id="compare-table")
        teach.build_review(ctx)
    ctx.add(label_file=label_file, review_btn=review_btn, metrics=metrics, iou_df=iou_df, bar=bar,
            only_img=only_img, only_legend=only_legend, compare_df=compare_df)


def review_outputs(ctx: Studio) -> list[Any]:
    return [ctx.metrics, ctx.iou_df, ctx.bar, ctx.only_img, ctx.only_legend, ctx.compare_df]


def wire(ctx: Studio) -> None:
    ctx.on("tile_loaded", clear, None, review_outputs(ctx))
    ctx.on("segmented", auto_review, [ctx.state], review_outputs(ctx))
    ctx.label_file.change(on_label_upload, [ctx.label_file, ctx.state, ctx.class_set], [ctx.state, ctx.gt_status],
                          **UI)
    ctx.review_btn.click(on_review, [ctx.state], review_outputs(ctx), **UI)
