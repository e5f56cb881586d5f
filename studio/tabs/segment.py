"""Segment tab: run MetaSegNet and the baseline on the session's tile and compare them.

The two masks are compared in a ``gr.ImageSlider`` (MetaSegNet | baseline over the same tile),
with a disagreement map and an opacity control; a plain note says when the tile's ground sample
distance is far from the model's (and offers to resample much finer tiles to it).

Registers ``seg_btn``, ``opacity``, ``resample``, the result components (:func:`result_outputs`)
and ``legend``.
Other tabs open a tile here with :func:`open_tile` / :func:`open_tile_outputs` (the hook the
Experiments tab uses: load a tile path, fill in a prompt, select this tab).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from studio import gsd, pair, polygons, scoring, views
from studio.session import SessionState
from studio.tabs import locate
from studio.tabs.common import (
    INFERENCE,
    UI,
    Studio,
    class_set_of,
    clean_message,
    image_file,
    legend_html,
    session,
    user_errors,
)

TAB_ID = "segment"
FRACTION_COLS = ["class", "MetaSegNet %", "baseline %"]


def overlays(state: SessionState, opacity: float):
    """((MetaSegNet overlay, baseline overlay) for the slider, disagreement map, disagreement text)."""
    from metaseg.visualize import disagreement_fraction, disagreement_map, overlay

    p = state.prediction
    cs = class_set_of(p.class_set)
    rgb = views.display_image(state.tile.rgb)
    a, b = views.display_image(p.metasegnet), views.display_image(p.baseline)
    dis = disagreement_map(a, b, rgb)
    frac = disagreement_fraction(p.metasegnet, p.baseline)
    out = state.output_path("results")  # new files per result: never rewritten while downloaded
    return (
        (image_file(overlay(rgb, a, cs, alpha=opacity), out, "metasegnet"),
         image_file(overlay(rgb, b, cs, alpha=opacity), out, "baseline")), image_file(dis, out, "disagreement"),
        f"The models disagree on **{100 * frac:.1f}%** of the pixels (magenta).",
    )


# --------------------------------------------------------------------------- handlers
@user_errors
def on_segment(prompt: str, opacity: float, state: SessionState | None, class_set: str | None = None,
               resample_gsd: bool = False, no_prompt: bool = False, progress=gr.Progress()):  # noqa: B008
    """Run both models; outputs: state, (slider pair), disagreement map and text, shares table,
    downloads, legend, status line, GSD note."""
    from studio.session import PairPrediction

    state = session(state)
    if state.tile is None:
        raise gr.Error("Load a tile first (upload one or pick an example).")
    progress(0.0, desc="loading models")
    tile_gsd = (state.location or {}).get("gsd_m") or getattr(getattr(state.tile, "info", None), "gsd_m", None)
    rng = gsd.model_gsd_range(sources=state.model_sources) if tile_gsd else None
    kind, target = gsd.gsd_check(tile_gsd, rng)
    resampled = target if resample_gsd and kind == "finer" else None
    if no_prompt:
        prompt = ""  # the `none` variant: MetaSegNet gets empty text
    result = gsd.run_pair_at_gsd(state.tile.rgb, state.tile.valid, prompt, tile_gsd, resampled,
                                      progress=lambda f, d: progress(f, desc=d), allow_empty=bool(no_prompt),
                                      sources=state.model_sources)
    if class_set and class_set != result.class_set.name:
        gr.Warning(clean_message(f"The models predict {result.class_set.name} classes; the prompt shown is for "
                                 f"{class_set}."))
    prompt_id = scoring.saved_prompt_id(state.prompt_id, prompt)
    state.prediction = PairPrediction(
        metasegnet=result.metasegnet, baseline=result.baseline, class_set=result.class_set.name,
        prompt_id=prompt_id, prompt_text=prompt, checkpoint_ids=result.checkpoint_ids,
        seconds=result.seconds,
    )
    if state.ground_truth is not None and state.ground_truth.shape != result.metasegnet.shape:
        state.ground_truth = None
    outdir = state.output_path("masks")
    outdir.mkdir(exist_ok=True)
    info = getattr(state.tile, "info", None)
    files = pair.write_masks(result, info, outdir)
    table = pd.DataFrame(pair.fractions_table(result), columns=FRACTION_COLS)
    timing = " · ".join(f"{r}: {s:.2f}s" for r, s in result.seconds.items())
    backends = sorted(set((result.backends or {}).values())) or ["torch"]
    note = "" if prompt_id is not None else (
        " The prompt was edited but not saved: save it as a version so this run can be compared by version.")
    if no_prompt:
        note = " MetaSegNet ran without a prompt (empty text, the experiments' `none` variant)."
    return (state, *overlays(state, opacity), table, files, legend_html(result.class_set.name),
            f"Done ({timing}; class set {result.class_set.name}; backend {', '.join(backends)}).{note}",
            gsd.gsd_note(tile_gsd, rng, resampled, resample_asked=bool(resample_gsd)))


@user_errors
def on_polygons(state: SessionState | None, min_area: Any = None):
    """Add both masks as polygons (GeoPackage + GeoJSON) to the downloads (on request: slow on noisy
    masks); polygons under ``min_area`` m² are dropped (empty: 16 pixels of the tile)."""
    state = session(state)
    p = state.prediction
    if p is None or state.tile is None:
        raise gr.Error("Segment the tile first.")
    outdir = state.output_path("masks")
    outdir.mkdir(exist_ok=True)
    masks = [str(f) for f in sorted(outdir.glob("*_mask.*"))]
    cs = class_set_of(p.class_set)
    vectors = polygons.write_polygons({"metasegnet": p.metasegnet, "baseline": p.baseline}, list(cs.names),
                                      getattr(state.tile, "info", None), outdir,
                                      min_area_m2=None if min_area in (None, "") else min_area)
    return masks + vectors


@user_errors
def on_opacity(opacity: float, state: SessionState | None):
    state = session(state)
    if state.prediction is None or state.tile is None:
        return gr.skip(), gr.skip(), gr.skip()
    return overlays(state, opacity)


def clear():
    """A new tile: the previous tile's masks, shares and downloads no longer apply (:func:`result_outputs`)."""
    return None, None, "", pd.DataFrame(columns=FRACTION_COLS), None, "", ""


# --------------------------------------------------------------------------- hook for other tabs
def open_tile_outputs(ctx: Studio) -> list[Any]:
    """Outputs of :func:`open_tile`, in order."""
    return [*locate.tile_outputs(ctx), ctx.no_prompt, ctx.tabs]


@user_errors
def open_tile(path: str | Path, prompt: str | None, class_set: str, state: SessionState | None):
    """Make ``path`` the session's tile, put ``prompt`` into the prompt box and show this tab.

    ``path`` must be a server-side file the caller chose (never a visitor's string). ``prompt``:
    ``None`` keeps the stored prompt of the tile's zone; ``""`` (or blank) is the ``none`` variant —
    the box is emptied and "Segment without a prompt" ticked, so Segment reproduces it; any other
    text fills the box. The caller declares its event with ``locate.tile_event(ctx, event)`` so the
    old results are cleared.
    """
    out = list(locate.load_tile(path, class_set, session(state), shown_name=Path(path).name))
    no_prompt = prompt is not None and not prompt.strip()
    if prompt is not None:
        out[5] = "" if no_prompt else prompt  # the prompt text box (see locate.located)
    return (*out, no_prompt, gr.Tabs(selected=TAB_ID))


# --------------------------------------------------------------------------- layout
def build(ctx: Studio) -> None:
    with gr.Tab("Segment", id=TAB_ID):
        with gr.Row():
            seg_btn = gr.Button("Segment with MetaSegNet and baseline", variant="primary", elem_id="segment-btn")
            opacity = gr.Slider(0, 1, value=0.5, step=0.05, label="Mask opacity", elem_id="opacity")
        with gr.Row():
            resample = gr.Checkbox(False, label="Resample to the model's GSD (for tiles much finer than the model's)",
                                   elem_id="resample-gsd")
            no_prompt = gr.Checkbox(False, label="Segment without a prompt (empty text: the experiments' `none` "
                                    "variant)", elem_id="no-prompt")
        seg_status = gr.Markdown("", elem_id="seg-status")
        gsd_note = gr.Markdown("", elem_id="gsd-note")
        legend = gr.HTML(legend_html("openearthmap"), elem_id="legend", js_on_load=None)
        slider = gr.ImageSlider(label="MetaSegNet (with prompt) | baseline (image only): drag to compare",
                                interactive=False, format="png", elem_id="slider", max_height=720)
        with gr.Row():
            dis_img = gr.Image(label="Disagreement", interactive=False, elem_id="disagreement", format="png")
            with gr.Column():
                dis_txt = gr.Markdown("")
                frac_df = gr.Dataframe(pd.DataFrame(columns=FRACTION_COLS), label="Area share per class",
                                       interactive=False, elem_id="fractions")
                downloads = gr.File(label="Masks (GeoTIFF when georeferenced, else PNG) and polygons",
                                    file_count="multiple", interactive=False, elem_id="downloads")
                with gr.Row(equal_height=True):
                    poly_btn = gr.Button("Add polygons (GeoPackage + GeoJSON: model, class, area per polygon)",
                                         size="sm", elem_id="polygons-btn", scale=3)
                    min_area = gr.Number(None, label="Drop polygons under (m²; empty = 16 pixels)", minimum=0,
                                         elem_id="min-area", scale=2)
    ctx.add(min_area=min_area, no_prompt=no_prompt)
    ctx.add(seg_btn=seg_btn, opacity=opacity, resample=resample, seg_status=seg_status, gsd_note=gsd_note,
            legend=legend, slider=slider, poly_btn=poly_btn, dis_img=dis_img, dis_txt=dis_txt, frac_df=frac_df, downloads=downloads)


def result_outputs(ctx: Studio) -> list[Any]:
    return [ctx.slider, ctx.dis_img, ctx.dis_txt, ctx.frac_df, ctx.downloads, ctx.seg_status, ctx.gsd_note]


def wire(ctx: Studio) -> None:
    ctx.on("tile_loaded", clear, None, result_outputs(ctx))
    seg = ctx.seg_btn.click(
        on_segment, [ctx.prompt, ctx.opacity, ctx.state, ctx.class_set, ctx.resample, ctx.no_prompt],
        [ctx.state, ctx.slider, ctx.dis_img, ctx.dis_txt, ctx.frac_df, ctx.downloads, ctx.legend,
         ctx.seg_status, ctx.gsd_note], **UI, **INFERENCE,
    )
    ctx.emit("segmented", seg)
    ctx.poly_btn.click(on_polygons, [ctx.state, ctx.min_area], [ctx.downloads], **UI)
    ctx.opacity.release(on_opacity, [ctx.opacity, ctx.state], [ctx.slider, ctx.dis_img, ctx.dis_txt], **UI)
