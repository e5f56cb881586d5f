"""The app's public API (gradio_client): ``/locate``, ``/segment``, ``/save_prompt``, ``/imagery``.

Hidden components carry the endpoints' parameters; every UI event elsewhere is undocumented, so
these are the only named endpoints.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from pathlib import Path
from typing import Any

import gradio as gr

from prompts_db.resolve import resolve_prompt
from studio import imagery, labels, limits, models, pair, placement, prompt_store, services, views
from studio.session import session_root, sweep_sessions
from studio.tabs.common import INFERENCE, Studio, drop_upload, image_file, path_of, user_errors


@user_errors
def api_locate(file: Any, lat: float | None, lon: float | None) -> dict[str, Any]:
    """The ``python -m metaseg locate --json`` object of a tile, or of typed coordinates."""
    src = path_of(file)
    if src:
        obj, _ = services.locate_file(labels.ensure_readable(src))
        if obj.get("lat") is None and lat is not None and lon is not None:
            typed = services.locate_point(lat, lon, "typed")
            obj.update(lat=typed["lat"], lon=typed["lon"], source="typed", zone=typed["zone"])
        return obj
    if lat is None or lon is None:
        raise gr.Error("Give a tile file or both lat and lon.")
    return services.locate_point(lat, lon, "typed")


def api_folder(request: Any) -> Path:
    """This API client's folder (by its Gradio session), kept while it is in use: idle ones (of API
    clients, which never close a tab) go with :func:`studio.session.sweep_sessions`."""
    sweep_sessions()
    key = str(getattr(request, "session_hash", None) or getattr(getattr(request, "client", None), "host", "api"))
    folder = session_root() / f"api-{uuid.uuid5(uuid.NAMESPACE_URL, key).hex[:16]}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@user_errors
def api_segment(file: Any, prompt: str | None, request: gr.Request = None):
    """Segment a tile with both models: (MetaSegNet overlay, baseline overlay, class fractions)."""
    from metaseg.visualize import overlay

    prompt_store.check_prompt_text(prompt)  # before any work: the same cap as saving a version
    src = labels.ensure_readable(path_of(file))
    try:
        loc, _ = services.locate_file(src)
        limits.check_pixel_budget(loc.get("width"), loc.get("height"))  # before any pixel is read
        tile = services.read_tile(src)
    except Exception:
        drop_upload(src)
        raise
    if not (prompt or "").strip():
        cs = models.class_set_of_models()
        prompt = resolve_prompt(prompt_store.get_store(), cs.name, zone=placement.zone_code(loc)).text
    result = pair.run_pair(tile.rgb, tile.valid, prompt)
    rgb = views.display_image(tile.rgb, min_side=0)  # API clients get the tile's own size
    out = api_folder(request) / "results"  # a new file per answer: never rewritten while downloaded
    ov = [image_file(overlay(rgb, views.display_image(getattr(result, r), min_side=0), result.class_set, alpha=0.5),
                     out, r)
          for r in models.ROLES]
    return ov[0], ov[1], pair.fractions_json(result)


@user_errors
def api_save_prompt(zone: str | None, class_set: str, text: str, request: gr.Request = None) -> dict[str, Any]:
    """Save ``text`` as the next prompt version of (zone, class set); returns the stored record."""
    prompt_store.check_prompt_save("api:" + str(getattr(request, "session_hash", None) or "anonymous"))
    zone = (zone or "").strip() or None
    rec = prompt_store.get_store().save(zone, class_set, text, source="user")
    return rec.to_dict()


API_FILE_TTL_S = 3600


@user_errors
def api_imagery(lat: float | None, lon: float | None, zoom: float | None, request: gr.Request = None):
    """Imagery around (lat, lon) from ``METASEG_IMAGERY_URL`` at ``zoom`` (15-19; empty = about
    0.5 m/px): (the GeoTIFF in EPSG:3857, its ``locate`` object with ``gsd_m``)."""
    if lat is None or lon is None:
        raise gr.Error("Give both lat and lon (decimal degrees).")
    key = str(getattr(request, "session_hash", None) or getattr(getattr(request, "client", None), "host", "api"))
    folder = api_folder(request)
    for old in folder.glob("imagery-*.tif"):  # a client's earlier answers, once it has had time to fetch them
        with contextlib.suppress(OSError):
            if time.time() - old.stat().st_mtime > API_FILE_TTL_S:
                old.unlink()
    out = folder / f"imagery-{uuid.uuid4().hex[:8]}.tif"
    res = imagery.fetch_imagery(lat, lon, zoom, out, key)
    obj, _ = services.locate_file(res.path)
    return str(res.path), obj


def build(ctx: Studio) -> None:
    with gr.Column(visible=False):
        ctx.add(
            api_file=gr.File(label="file", type="filepath"),
            api_lat=gr.Number(label="lat"),
            api_lon=gr.Number(label="lon"),
            api_loc_out=gr.JSON(label="locate"),
            api_prompt=gr.Textbox(label="prompt"),
            api_ov_a=gr.Image(label="metasegnet_overlay", format="png"),
            api_ov_b=gr.Image(label="baseline_overlay", format="png"),
            api_frac=gr.JSON(label="class_fractions"),
            api_zone=gr.Textbox(label="zone"),
            api_cs=gr.Textbox(label="class_set"),
            api_text=gr.Textbox(label="text"),
            api_rec=gr.JSON(label="prompt"),
            api_zoom=gr.Number(label="zoom", precision=0),
            api_tif=gr.File(label="geotiff"),
            api_btn=gr.Button("api"),
        )


def wire(ctx: Studio) -> None:
    btn = ctx.api_btn
    btn.click(api_locate, [ctx.api_file, ctx.api_lat, ctx.api_lon], [ctx.api_loc_out], api_name="locate")
    btn.click(api_segment, [ctx.api_file, ctx.api_prompt], [ctx.api_ov_a, ctx.api_ov_b, ctx.api_frac],
              api_name="segment", **INFERENCE)
    btn.click(api_save_prompt, [ctx.api_zone, ctx.api_cs, ctx.api_text], [ctx.api_rec], api_name="save_prompt")
    btn.click(api_imagery, [ctx.api_lat, ctx.api_lon, ctx.api_zoom], [ctx.api_tif, ctx.api_loc_out],
              api_name="imagery")
