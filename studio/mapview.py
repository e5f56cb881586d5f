"""The Locate map: a Folium/Leaflet page that works offline and reports clicks to the app.

How the pieces fit (see ASSETS.md "Gradio, Folium, browser"):

* The map is a complete HTML page rendered by folium and shown in an ``<iframe srcdoc>`` inside a
  ``gr.HTML``. Folium's CDN links are dropped; Leaflet 1.9.4's JS and CSS (vendored from npm in
  ``static/vendor/leaflet``) are inlined, so the map needs no network.
* :class:`ClickBridge` adds ``map.on('click')``: it draws a circle where the user clicked and posts
  ``{type: "metaseg-map-click", lat, lng}`` to ``window.parent``. The app's listener component
  (:data:`LISTENER_JS`) turns that message into a ``change`` event carrying ``{lat, lng}``.
* Layers: OpenStreetMap tiles (online users; offline they simply stay grey), the Köppen-Geiger map
  as an image overlay (a PNG data URI, so it works offline), the located point as a circle marker
  (default marker icons do not load inside ``srcdoc``) and the tile footprint as a polygon.

The Köppen image comes from :func:`metaseg.climate.zone_map_rgba` (equirectangular); Leaflet draws
image overlays in Web Mercator, so :func:`mercator_rows` resamples the rows before encoding.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
LEAFLET_DIR = STATIC_DIR / "vendor" / "leaflet"

#: Web Mercator stops at about ±85.05°; the overlay covers that band.
MERCATOR_MAX_LAT = 85.0511287798
MESSAGE_TYPE = "metaseg-map-click"

#: JavaScript of the hidden listener ``gr.HTML``: a map click becomes its value + a change event.
LISTENER_JS = f"""
if (!window.__metasegMapListener) {{ window.__metasegMapListener = true; }}
window.addEventListener('message', (event) => {{
  const d = event.data;
  if (!d || d.type !== '{MESSAGE_TYPE}') return;
  const lat = Number(d.lat), lng = Number(d.lng);
  if (!Number.isFinite(lat) || !Number.isFinite(lng)) return;
  props.value = {{lat: lat, lng: lng, t: Date.now()}};
  trigger('change');
}});
"""

LISTENER_TEMPLATE = "<span class='metaseg-map-listener' data-lat='${value && value.lat}'></span>"

_lock = threading.Lock()


# --------------------------------------------------------------------------- offline assets
@lru_cache(maxsize=1)
def leaflet_inline() -> str:
    """Leaflet's CSS and JS as inline ``<style>``/``<script>`` tags (layer icons as data URIs)."""
    css = (LEAFLET_DIR / "leaflet.css").read_text(encoding="utf-8")
    for name in ("layers.png", "layers-2x.png"):
        png = LEAFLET_DIR / "images" / name
        if png.exists():
            uri = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")
            css = css.replace(f"url(images/{name})", f"url({uri})")
    js = (LEAFLET_DIR / "leaflet.js").read_text(encoding="utf-8")
    js = js.replace("</script", "<\\/script")  # never close the tag early
    return f"<style>{css}</style>\n<script>{js}</script>"


def mercator_rows(rgba: np.ndarray, height: int | None = None) -> np.ndarray:
    """Resample an equirectangular world image (rows = latitude 90..-90) into Web Mercator rows.

    Args:
        rgba: H×W×C image covering lat 90 → -90 (top to bottom), lon -180 → 180.
        height: output height; defaults to the input width (Mercator world is square).

    Returns:
        height×W×C image covering ±:data:`MERCATOR_MAX_LAT` in Mercator projection (nearest row).
    """
    h_in, w_in = rgba.shape[:2]
    h_out = int(height or w_in)
    y_max = math.log(math.tan(math.pi / 4 + math.radians(MERCATOR_MAX_LAT) / 2))
    y = np.linspace(y_max, -y_max, h_out)
    lat = np.degrees(2 * np.arctan(np.exp(y)) - np.pi / 2)
    rows = np.clip(((90.0 - lat) / 180.0 * h_in).astype(int), 0, h_in - 1)
    return rgba[rows]


@lru_cache(maxsize=2)
def koppen_overlay_uri(width: int = 720) -> str | None:
    """The Köppen-Geiger map as a PNG data URI in Web Mercator, or ``None`` when unavailable."""
    from PIL import Image

    try:
        from metaseg.climate import zone_map_rgba

        rgba = np.asarray(zone_map_rgba(width=width))
    except Exception as exc:  # noqa: BLE001 - the map still works without the overlay
        log.warning("Köppen overlay unavailable: %s", exc)
        return None
    merc = mercator_rows(rgba)
    buf = io.BytesIO()
    Image.fromarray(merc.astype(np.uint8)).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# --------------------------------------------------------------------------- folium parts
def _folium_classes():
    import folium
    from branca.element import MacroElement
    from jinja2 import Template

    class OfflineMap(folium.Map):
        """A folium map without CDN dependencies (Leaflet is inlined by :func:`map_page`)."""

        default_js: list = []
        default_css: list = []

    class ClickBridge(MacroElement):
        """Posts every map click to the parent window and marks it with a circle."""

        _template = Template(
            """
            {% macro script(this, kwargs) %}
            (function() {
              var map = {{ this._parent.get_name() }};
              var mark = null;
              map.on('click', function(e) {
                if (mark) { map.removeLayer(mark); }
                mark = L.circleMarker(e.latlng, {radius: 8, color: '#ff00aa', weight: 3,
                                                  fillOpacity: 0.2, pane: 'markerPane'}).addTo(map);
                var msg = {type: '""" + MESSAGE_TYPE + """', lat: e.latlng.lat,
                           lng: ((e.latlng.lng + 540) % 360) - 180};
                try { window.parent.postMessage(msg, '*'); } catch (err) {}
              });
            })();
            {% endmacro %}
            """
        )

        def __init__(self) -> None:
            super().__init__()
            self._name = "ClickBridge"

    return folium, OfflineMap, ClickBridge


def imagery_layer():
    """The configured XYZ imagery source (``METASEG_IMAGERY_URL``, read now) or ``None``."""
    from metaseg.errors import ImageryError
    from metaseg.imagery import source_from_env

    try:
        return source_from_env()
    except ImageryError as exc:
        log.warning("no imagery base layer: %s", exc)
        return None


def map_page(
    lat: float | None = None,
    lon: float | None = None,
    footprint: Sequence[Sequence[float]] | None = None,
    zone: dict[str, Any] | None = None,
    label: str | None = None,
    overlay_opacity: float = 0.45,
) -> str:
    """Render the complete map page (a standalone HTML document).

    Args:
        lat, lon: the located point (circle marker, map centre) or ``None`` for a world view.
        footprint: tile corners as ``(lat, lon)`` pairs, drawn as a polygon.
        zone: the climate object (keys ``code``, ``name``, ``color``) for the marker popup.
        label: extra popup text (e.g. where the location came from); escaped.
        overlay_opacity: opacity of the Köppen overlay.
    """
    folium, OfflineMap, ClickBridge = _folium_classes()
    has_point = lat is not None and lon is not None
    with _lock:  # folium element ids come from a global counter
        m = OfflineMap(
            location=[lat, lon] if has_point else [20.0, 0.0],
            zoom_start=6 if has_point else 2,
            tiles=None,
            control_scale=True,
            world_copy_jump=True,
        )
        folium.TileLayer(
            "OpenStreetMap", name="OpenStreetMap (online)", attr="© OpenStreetMap contributors"
        ).add_to(m)
        imagery = imagery_layer()
        if imagery is not None:  # the layer "Fetch imagery here" downloads from, with its credit
            folium.TileLayer(
                tiles=imagery.template, attr=html.escape(imagery.attribution), name="Satellite imagery (online)",
                subdomains="".join(imagery.subdomains), max_zoom=19, max_native_zoom=19, show=False,
            ).add_to(m)
        uri = koppen_overlay_uri()
        if uri:
            folium.raster_layers.ImageOverlay(
                image=uri,
                bounds=[[-MERCATOR_MAX_LAT, -180.0], [MERCATOR_MAX_LAT, 180.0]],
                opacity=overlay_opacity,
                name="Köppen-Geiger zones",
                interactive=False,
                zindex=2,
            ).add_to(m)
        if footprint:
            pts = [[float(a), float(b)] for a, b in footprint]
            folium.Polygon(
                pts, color="#ffcc00", weight=3, fill=True, fill_opacity=0.1, tooltip="tile footprint"
            ).add_to(m)
            if has_point:
                m.fit_bounds([[min(p[0] for p in pts), min(p[1] for p in pts)],
                              [max(p[0] for p in pts), max(p[1] for p in pts)]], max_zoom=9)
        if has_point:
            color = (zone or {}).get("color") or "#333333"
            text = f"{lat:.5f}, {lon:.5f}"
            if zone and zone.get("code"):
                text += f" — {zone['code']} {zone.get('name', '')}"
            if label:
                text += f" ({label})"
            folium.CircleMarker(
                [lat, lon], radius=8, color="#000000", weight=2, fill=True, fill_color=color,
                fill_opacity=0.9, tooltip=html.escape(text), pane="markerPane",
            ).add_to(m)
        folium.LayerControl(collapsed=True).add_to(m)
        m.add_child(ClickBridge())
        m.get_root().header.add_child(folium.Element(leaflet_inline()), name="leaflet_inline", index=0)
        page = m.get_root().render()
    return page


def map_iframe(page: str, height: int = 420) -> str:
    """Wrap a map page into an ``<iframe srcdoc>`` for ``gr.HTML`` (the page is attribute-escaped)."""
    return (
        f'<iframe class="metaseg-map" title="Location map" srcdoc="{html.escape(page, quote=True)}" '
        f'style="width:100%;height:{int(height)}px;border:0;border-radius:8px" '
        'sandbox="allow-scripts allow-same-origin allow-popups"></iframe>'
    )


def map_html(**kwargs: Any) -> str:
    """:func:`map_page` wrapped by :func:`map_iframe` (what the app puts into its ``gr.HTML``)."""
    height = kwargs.pop("height", 420)
    return map_iframe(map_page(**kwargs), height=height)


def parse_click(value: Any) -> tuple[float, float] | None:
    """``(lat, lon)`` from the listener's value (a dict or its JSON text); ``None`` if absent."""
    if value in (None, "", {}):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if not isinstance(value, dict):
        return None
    lat, lon = value.get("lat"), value.get("lng", value.get("lon"))
    try:
        lat, lon = float(lat), float(lon)
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(lat) and math.isfinite(lon)):
        return None
    return lat, lon
