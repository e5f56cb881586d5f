"""Label tab: paint a ground truth on the tile itself and save it.

The editor shows the tile as its background and the label as one paint layer over it, drawn in
the class colours at an adjustable opacity. A user starts from an empty layer (sparse strokes:
what is not painted stays *unlabelled*) or from a prediction / the current ground truth (dense
corrections), picks the brush by class name, paints, erases, and saves. Unlabelled pixels are
stored as 255 in the label file (never a class); the file's tags name its class set
(:func:`studio.labels.save_label`). Saved labels of the session's tiles are what
"Teach both models" learns from (:mod:`studio.tabs.teach`, this tab's lower half).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd

from studio import experiments, gsd, labels, prompt_store, views
from studio.session import SessionState
from studio.tabs import teach as teach_ui
from studio.tabs.common import UI, Studio, class_set_of, gt_text, legend_html, session, user_errors

TAB_ID = "label"
EMPTY = "empty (paint strokes; the rest stays unlabelled)"
START_CHOICES = [EMPTY, "MetaSegNet prediction", "baseline prediction", "ground truth"]
DEFAULT_OPACITY = 0.6
#: The editor shows tiles up to this many pixels a side (larger tiles: a strided view, and the
#: saved label is brought back to the tile's grid by nearest neighbour).
EDITOR_MAX_SIDE = 1024


def _hex(color) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(c) for c in color))


def brush(class_set: str, opacity: float = DEFAULT_OPACITY, selected: str | None = None) -> gr.Brush:
    """Brushes in the class colours at the layer's opacity; ``selected`` (a class name) is the current one."""
    cs = class_set_of(class_set)
    alpha = float(min(max(opacity, 0.2), 1.0))
    colors = [(_hex(c), alpha) for c in cs.colors]
    k = cs.index_of(selected) if selected else 0
    return gr.Brush(colors=colors, default_color=colors[k], color_mode="fixed", default_size=8)


def label_class_set(state: SessionState, chosen: str | None = None) -> str:
    """The class set a label of this session's tile uses: the models' (after a segmentation), else
    the one chosen in the Locate panel."""
    if state.prediction is not None:
        return state.prediction.class_set
    return chosen or getattr(state, "class_set", None) or "openearthmap"


def editor_shape(shape: tuple[int, int], max_side: int = EDITOR_MAX_SIDE) -> tuple[int, int]:
    """``(H, W)`` of the editor's view of a tile of ``shape`` (:func:`studio.views.display_image`'s stride)."""
    h, w = shape
    step = int(np.ceil(max(h, w) / max_side)) if max(h, w) > max_side else 1
    return -(-h // step), -(-w // step)


def _view(img: np.ndarray) -> np.ndarray:
    # the editor's grid is :func:`editor_shape`'s: tiny tiles are not enlarged here (a save maps it back)
    return views.display_image(img, EDITOR_MAX_SIDE, min_side=0)


def editor_value(state: SessionState, view_index: np.ndarray | None, cs_name: str, opacity: float) -> dict[str, Any]:
    """The editor's value: the tile as background, with the starting label (a prediction or the
    ground truth, on the editor's grid) blended over it at ``opacity``; strokes go on the editor's
    own empty layer (the browser editor does not reliably load layers sent by the server).

    The starting label is kept in the session (``state.label_start``): on save, what the strokes
    leave unpainted keeps its class from there (255 = unlabelled for an empty start).
    """
    from metaseg.visualize import overlay

    rgb = _view(np.asarray(state.tile.rgb)[..., :3]).astype(np.uint8)
    state.label_start = None if view_index is None else np.asarray(view_index, np.uint8)
    if view_index is not None:
        rgb = np.asarray(overlay(rgb, view_index, class_set_of(cs_name), alpha=float(opacity)), np.uint8)[..., :3]
    return {"background": rgb, "layers": [], "composite": None}


@user_errors
def on_label_start(start: str, state: SessionState | None, opacity: float = DEFAULT_OPACITY,
                   class_set: str | None = None):
    """Load the tile into the editor with an empty layer, a prediction or the ground truth over it."""
    state = session(state)
    if state.tile is None:
        raise gr.Error("Load a tile first.")
    p = state.prediction
    cs_name = label_class_set(state, class_set)
    if start == "ground truth":
        if state.ground_truth is None:
            raise gr.Error("This tile has no ground truth yet; start from an empty layer or a prediction.")
        mask = state.ground_truth
        cs_name = state.ground_truth_class_set or cs_name  # the ground truth's own class set
    elif start in ("MetaSegNet prediction", "baseline prediction"):
        if p is None:
            raise gr.Error("Segment the tile first, then correct a prediction (or start from an empty layer).")
        mask = p.metasegnet if start.startswith("MetaSegNet") else p.baseline
    elif start == EMPTY or not start:
        mask = None
    else:
        raise gr.Error(f"Unknown start {start!r}; choose one of: {', '.join(START_CHOICES)}.")
    choices = class_choices(cs_name)
    state.label_start_class_set = cs_name
    return (gr.update(value=editor_value(state, None if mask is None else _view(mask), cs_name, opacity),
                      brush=brush(cs_name, opacity)),
            legend_html(cs_name), gr.update(choices=choices, value=choices[0][1]))


#: Picking a brush by class name happens in the browser: any property update of the editor from
#: the server reloads its layers from the value the server last sent (strokes since then would be
#: lost, and a round trip blanks the canvas), so the radio sets the editor's brush colour directly.
PICK_BRUSH_JS = """(choice, opacity) => {
    const hex = String(choice || '').split('|').pop();
    const brush = window.editor && window.editor.tools && window.editor.tools.get('brush');
    if (brush && /^#[0-9a-fA-F]{6}$/.test(hex)) {
        brush.set_brush_color(hex);
        brush.set_brush_opacity(Math.min(Math.max(Number(opacity) || 0.6, 0.2), 1));
    }
    return [choice, opacity];
}"""


def class_choices(class_set: str) -> list[tuple[str, str]]:
    """Brush choices: ``(class name, "name|#rrggbb")`` (the value carries the colour for the browser)."""
    cs = class_set_of(class_set)
    return [(n, f"{n}|{_hex(c)}") for n, c in zip(cs.names, cs.colors, strict=True)]


def brush_class_name(choice: str | None) -> str | None:
    """The class name of a brush choice (``"road|#ffffff"`` or a plain name)."""
    return str(choice).split("|", 1)[0] if choice else None


def painted_index(editor: Any, state: SessionState, cs_name: str) -> np.ndarray:
    """Class indices of the editor's paint layer on the editor's grid (255 = unlabelled)."""
    layer = labels.editor_layer(editor)
    if layer is None and isinstance(editor, dict) and editor.get("background") is None:
        comp = labels.editor_composite(editor)  # an API client's dense colour mask (no tile under it)
        if comp is not None and np.ndim(comp) == 3:
            comp = np.asarray(comp)[..., :3].astype(np.uint8)
            layer = np.concatenate([comp, np.full(comp.shape[:2] + (1,), 255, np.uint8)], axis=2)
    if layer is None:
        raise gr.Error("Nothing to save: load the tile into the editor and paint first.")
    h, w = state.tile.rgb.shape[:2]
    want = editor_shape((h, w))
    if layer.shape[:2] != want:
        raise gr.Error(f"The painted label is {layer.shape[1]}×{layer.shape[0]} but the tile is {w}×{h}"
                       + (f" (shown at {want[1]}×{want[0]})" if want != (h, w) else "")
                       + "; load the tile into the editor again.")
    valid = getattr(state.tile, "valid", None)
    index = labels.layer_to_index(layer, class_set_of(cs_name), None if valid is None else _view(valid))
    start = getattr(state, "label_start", None)
    if start is not None and start.shape == index.shape:  # unpainted pixels keep the starting label
        index = np.where(index == labels.IGNORE, start, index).astype(np.uint8)
        if valid is not None:
            index[~np.asarray(_view(valid), dtype=bool)] = labels.IGNORE
    return index


@user_errors
def on_label_save(editor: Any, state: SessionState | None, class_set: str | None = None, prompt: str | None = None):
    state = session(state)
    if state.tile is None or not state.tile_hash:
        raise gr.Error("Load a tile first.")
    cs_name = label_class_set(state, class_set)
    if getattr(state, "label_start_class_set", None):
        cs_name = state.label_start_class_set  # the editor's brushes (and starting mask) are in this set
    cs = class_set_of(cs_name)
    index = painted_index(editor, state, cs_name)
    h, w = state.tile.rgb.shape[:2]
    if index.shape != (h, w):
        index = gsd.upsample_mask(index, (h, w))
    valid = getattr(state.tile, "valid", None)
    if valid is not None:
        index[~np.asarray(valid, dtype=bool)] = labels.IGNORE
    labelled = int((index < cs.num_classes).sum())
    if labelled == 0:
        raise gr.Error("No labelled pixel: paint at least one stroke of a class before saving.")
    row = labels.save_label(index, cs, getattr(state.tile, "info", None), state.tile_hash,
                              labels.label_dir() / state.tile_hash[:16])
    kept = experiments.keep_labelled_tile(state.tile_path, Path(row["path"]).parent)  # evaluable/teachable later
    state.ground_truth, state.ground_truth_source = index, f"saved label #{row['id']}"
    state.ground_truth_class_set = cs.name
    remember_label(state, row, cs.name, labelled, kept, prompt)
    if row.get("id") is not None and isinstance(getattr(state, "label_ids", None), set):
        state.label_ids.add(int(row["id"]))
    share = 100.0 * labelled / index.size
    return state, (f"Saved label #{row['id']} ({cs.name} classes, {labelled:,} labelled pixels = {share:.1f}% of the "
                   "tile; the rest is unlabelled); it is now this tile's ground truth."), \
        labels_table(state), row["path"], gt_text(state)


def remember_label(state: SessionState, row: dict[str, Any], class_set: str, labelled: int,
                   tile_copy: Path | None, prompt: str | None = None) -> None:
    """Record a saved label as one of this session's (what "Teach both models" may learn from)."""
    labels = getattr(state, "session_labels", None)
    if labels is None:
        return
    labels[:] = [r for r in labels if r["tile_hash"] != state.tile_hash]  # the newest label per tile
    labels.append({"id": row.get("id"), "path": row["path"], "tile_hash": state.tile_hash,
                   "tile": str(tile_copy) if tile_copy else state.tile_path, "class_set": class_set,
                   "labelled_pixels": labelled, "prompt": (prompt or "").strip() or None})


def own_labels(state: SessionState) -> set[int] | None:
    """The saved labels this session may see: its own, or all (``None``) when the operator shares them."""
    from studio import policy

    return None if policy.share_labels() else set(state.label_ids)


def labels_table(state: SessionState) -> pd.DataFrame:
    rows = prompt_store.get_store().labels(state.tile_hash) if state.tile_hash else []
    ids = own_labels(state)
    return views.labels_table([r for r in rows if ids is None or r.get("id") in ids])


@user_errors
def on_labels_export(state: SessionState | None):
    state = session(state)
    if not state.tile_hash:
        raise gr.Error("Load a tile first.")
    out = labels.zip_labels(state.tile_hash, state.output_path("labels.zip"), own_labels(state))
    return labels_table(state), str(out)


def build(ctx: Studio) -> None:
    with gr.Tab("Label", id=TAB_ID):
        gr.Markdown("Paint on the tile: pick a class, brush strokes over it (the eraser removes them). "
                    "Start from an empty layer for a few strokes per class: unpainted pixels stay "
                    "*unlabelled* and are ignored. Start from a prediction to correct it densely.",
                    elem_classes=["ms-hint"])
        with gr.Row():
            start = gr.Radio(START_CHOICES, value=START_CHOICES[0], label="Start from", elem_id="label-start-from")
            start_btn = gr.Button("Load into the editor", elem_id="label-start")
        with gr.Row():
            brush_class = gr.Radio(class_choices("openearthmap"), value=class_choices("openearthmap")[0][1],
                                   label="Brush class", elem_id="brush-class", scale=3)
            label_opacity = gr.Slider(0.2, 1.0, value=DEFAULT_OPACITY, step=0.05, label="Label opacity (strokes; the starting mask on loading)",
                                      elem_id="label-opacity", scale=1)
        label_legend = gr.HTML(legend_html("openearthmap"), js_on_load=None, elem_id="label-legend")
        editor = gr.ImageEditor(label="Paint with the class brushes over the tile", type="numpy", format="png",
                                image_mode="RGBA", brush=brush("openearthmap"), eraser=gr.Eraser(default_size=10),
                                sources=(), layers=False, transforms=(), elem_id="editor", height=560)
        with gr.Row():
            save_label_btn = gr.Button("Save as ground truth", variant="primary", elem_id="label-save")
            export_btn = gr.Button("Export this tile's labels (zip)")
        label_status = gr.Markdown("", elem_id="label-status")
        labels_df = gr.Dataframe(views.labels_table([]), label="Saved labels of this tile", interactive=False)
        label_file_out = gr.File(label="Label file", interactive=False, height=90)
        teach_ui.build(ctx)
    ctx.add(label_start=start, label_start_btn=start_btn, label_legend=label_legend, editor=editor,
            brush_class=brush_class, label_opacity=label_opacity,
            save_label_btn=save_label_btn, export_btn=export_btn, label_status=label_status,
            labels_df=labels_df, label_file_out=label_file_out)


def clear():
    """A new tile: the editor's strokes belonged to the previous one."""
    return None, ""


def wire(ctx: Studio) -> None:
    ctx.on("tile_loaded", clear, None, [ctx.editor, ctx.label_status])
    ctx.label_start_btn.click(on_label_start, [ctx.label_start, ctx.state, ctx.label_opacity, ctx.class_set],
                              [ctx.editor, ctx.label_legend, ctx.brush_class], **UI)
    ctx.brush_class.input(None, [ctx.brush_class, ctx.label_opacity], None, js=PICK_BRUSH_JS, **UI)
    ctx.label_opacity.release(None, [ctx.brush_class, ctx.label_opacity], None, js=PICK_BRUSH_JS, **UI)
    saved = ctx.save_label_btn.click(on_label_save, [ctx.editor, ctx.state, ctx.class_set, ctx.prompt],
                                     [ctx.state, ctx.label_status, ctx.labels_df, ctx.label_file_out,
                                      ctx.gt_status], **UI)
    ctx.emit("label_saved", saved)
    ctx.export_btn.click(on_labels_export, [ctx.state], [ctx.labels_df, ctx.label_file_out], **UI)
    teach_ui.wire(ctx)
