"""STAC inputs: the tiles of an ItemCollection, catalog/collection (recursive) or single item.

A STAC item contributes one asset: ``--asset KEY``, else ``visual``, else its first image asset;
relative asset hrefs are resolved against the STAC file. Read with ``pystac`` (a local path or an
``http(s)`` URL).
"""

from __future__ import annotations

import os
import urllib.parse
from typing import Any

from metaseg.errors import MetasegError
from metaseg.mapping.layout import is_url, one_line
from metaseg.mapping.sources import TILE_SUFFIXES, Source

DEFAULT_ASSET = "visual"
#: Image media types of STAC assets (``--asset`` not given and no ``visual`` asset).
_IMAGE_TYPES = ("image/tiff", "image/geotiff", "application/geotiff", "image/vnd.stac.geotiff")


def _geometry_centre(item: Any) -> tuple[float, float] | None:
    """(lat, lon) of the centre of a STAC item's bbox (or geometry bounds)."""
    bbox = getattr(item, "bbox", None)
    if not bbox and getattr(item, "geometry", None):
        try:
            from shapely.geometry import shape

            bbox = shape(item.geometry).bounds
        except Exception:  # noqa: BLE001 - odd geometry: no centre
            bbox = None
    if not bbox or len(bbox) not in (4, 6):
        return None
    west, south, east, north = (bbox[0], bbox[1], bbox[3], bbox[4]) if len(bbox) == 6 else bbox
    if east < west:  # crosses the antimeridian
        east += 360.0
    lon = (west + east) / 2.0
    lon = ((lon + 180.0) % 360.0) - 180.0
    return (float(south + north) / 2.0, float(lon))


def _pick_asset(item: Any, key: str | None) -> tuple[str, Any]:
    assets = dict(item.assets)
    if key:
        if key in assets:
            return key, assets[key]
        raise MetasegError(
            f"STAC item {item.id!r} has no asset {key!r} (it has: {', '.join(sorted(assets)) or 'none'})"
        )
    if DEFAULT_ASSET in assets:
        return DEFAULT_ASSET, assets[DEFAULT_ASSET]
    for name, asset in assets.items():
        media = (asset.media_type or "").lower()
        roles = set(asset.roles or [])
        href = (asset.href or "").lower().split("?")[0]
        if media.startswith(_IMAGE_TYPES) or "data" in roles and href.endswith(TILE_SUFFIXES) \
                or (not media and href.endswith(TILE_SUFFIXES)):
            return name, asset
    raise MetasegError(
        f"STAC item {item.id!r} has no image asset (assets: {', '.join(sorted(assets)) or 'none'}); "
        "pick one with --asset KEY"
    )


def _resolve_href(href: str, base: str) -> str:
    """An asset href as an absolute local path or URL (relative hrefs against the STAC file ``base``)."""
    if is_url(href):
        return href
    if href.lower().startswith("file://"):
        return urllib.parse.unquote(urllib.parse.urlparse(href).path)
    if is_url(base):
        return urllib.parse.urljoin(base, href)
    if os.path.isabs(href):
        return href
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(base)), href))


def read_stac(href: str, asset_key: str | None) -> list[Source]:
    """Sources of a STAC ItemCollection, catalog/collection (recursive) or single item."""
    import pystac
    from pystac import StacIO

    try:
        data = StacIO.default().read_json(href)
    except Exception as exc:  # noqa: BLE001 - HTTP errors, bad JSON, missing file
        raise MetasegError(f"cannot read STAC input {href}: {one_line(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise MetasegError(f"{href} is not a STAC document (a JSON object)")
    items: list[Any] = []
    bases: list[str] = []
    try:
        if data.get("type") == "FeatureCollection":
            collection = pystac.ItemCollection.from_dict(data, preserve_dict=False)
            items = list(collection.items)
            bases = [href] * len(items)
        else:
            obj = pystac.read_dict(data, href=href)
            if isinstance(obj, pystac.Item):
                items, bases = [obj], [href]
            elif isinstance(obj, pystac.Catalog):  # Collection is a Catalog
                for item in obj.get_items(recursive=True):
                    items.append(item)
                    bases.append(item.get_self_href() or href)
            else:
                raise MetasegError(f"{href} is a STAC {type(obj).__name__}, not an item collection or catalog")
    except MetasegError:
        raise
    except Exception as exc:  # noqa: BLE001 - pystac raises many types on malformed documents
        raise MetasegError(f"cannot read STAC input {href}: {one_line(exc)[:200]}") from None
    if not items:
        raise MetasegError(f"STAC input {href} has no items")
    out = []
    for item, base in zip(items, bases, strict=True):
        _, asset = _pick_asset(item, asset_key)
        path = _resolve_href(asset.href, base)
        props = item.properties or {}
        version = "|".join(str(v) for v in (
            props.get("updated"), props.get("datetime"), asset.extra_fields.get("file:checksum"),
            asset.extra_fields.get("file:size"),
        ))
        out.append(Source(path=path, stem=str(item.id), item=str(item.id), centre=_geometry_centre(item),
                          version=version))
    return out


