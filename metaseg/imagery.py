"""Imagery around a point from an XYZ tile server, as a georeferenced GeoTIFF (EPSG:3857).

The server comes only from the environment (read at each call, never from a visitor):

- ``METASEG_IMAGERY_URL``: an XYZ template with ``{z}``, ``{x}``, ``{y}`` in any order
  (``.../{z}/{x}/{y}.png`` or Esri's ``.../tile/{z}/{y}/{x}``), optionally ``{s}`` (subdomains
  ``a``, ``b``, ``c``, or ``METASEG_IMAGERY_SUBDOMAINS``). Unset: :data:`DEFAULT_URL` (Esri World
  Imagery); ``off``: fetching is disabled.
- ``METASEG_IMAGERY_ATTRIBUTION``: the credit shown with the layer (default: Esri's credit when the
  default URL is used, else the template's host).
- ``METASEG_IMAGERY_TIMEOUT`` (seconds per tile, 10), ``METASEG_IMAGERY_MAX_TILES`` (per request,
  36), ``METASEG_IMAGERY_CACHE`` (tile cache folder; default ``$METASEG_CACHE_DIR/imagery`` or
  ``~/.cache/metaseg/imagery``), ``METASEG_IMAGERY_CACHE_MB`` (its size bound, 512; the least
  recently used tiles go first; 0 = unbounded).

Fetching is polite: a User-Agent naming the project, a per-tile timeout and an overall deadline,
at most :func:`max_tiles` tiles per request, at most four connections at a time, and an on-disk
cache so a tile is downloaded once. Any failure (switched off, server down, HTTP error, bytes that
are not an image) raises :class:`~metaseg.errors.ImageryError` with a one-line reason.
No torch, no gradio.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from metaseg import __version__
from metaseg.errors import ImageryError

#: Documented default for a public Space: Esri World Imagery (note Esri's terms of use).
DEFAULT_URL = "https://server.arcgisonline.com/ArcGIS/rest/services/World_Imagery/MapServer/tile/{z}/{y}/{x}"
DEFAULT_ATTRIBUTION = (
    "Tiles © Esri — Source: Esri, Maxar, Earthstar Geographics, and the GIS User Community"
)
TILE_SIZE = 256
ZOOMS = (15, 16, 17, 18, 19)
DEFAULT_SIZE = 1024
TARGET_GSD_M = 0.5  # about OpenEarthMap's resolution
MERCATOR_HALF_M = 20037508.342789244  # half the Web Mercator world width in metres
MERCATOR_MAX_LAT = 85.0511287798
USER_AGENT = f"MetaSegNet-Studio/{__version__} (research demo; imagery around one point on request)"
MAX_WORKERS = 4


# --------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class ImagerySource:
    """An XYZ tile server: URL template, credit, subdomains."""

    template: str
    attribution: str
    subdomains: tuple[str, ...] = ("a", "b", "c")

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.template.replace("{s}", self.subdomains[0])).netloc

    def url(self, z: int, x: int, y: int) -> str:
        sub = self.subdomains[(x + y) % len(self.subdomains)]
        return self.template.replace("{s}", sub).replace("{z}", str(z)).replace("{x}", str(x)).replace("{y}", str(y))

    @property
    def key(self) -> str:
        """Cache folder name of this server (a hash of its template)."""
        return hashlib.sha256(self.template.encode()).hexdigest()[:16]


def check_template(template: str) -> str:
    """Validate an XYZ URL template; returns it stripped. Raises :class:`ImageryError`."""
    t = template.strip()
    parts = urllib.parse.urlsplit(t.replace("{s}", "a"))
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ImageryError(f"METASEG_IMAGERY_URL must be an http(s) URL template, not {t[:80]!r}")
    missing = [k for k in ("{z}", "{x}", "{y}") if k not in t]
    if missing:
        raise ImageryError(f"METASEG_IMAGERY_URL lacks {', '.join(missing)}: an XYZ template like .../{{z}}/{{x}}/{{y}}.png")
    return t


def source_from_env(environ: dict[str, str] | None = None) -> ImagerySource | None:
    """The configured server, or ``None`` when ``METASEG_IMAGERY_URL=off`` (read now, not at import)."""
    env = os.environ if environ is None else environ
    raw = (env.get("METASEG_IMAGERY_URL") or "").strip()
    if raw.lower() in ("off", "none", "false", "0", "disabled"):
        return None
    template = check_template(raw) if raw else DEFAULT_URL
    attribution = (env.get("METASEG_IMAGERY_ATTRIBUTION") or "").strip()
    if not attribution:
        attribution = DEFAULT_ATTRIBUTION if template == DEFAULT_URL else f"Imagery: {ImagerySource(template, '').host}"
    subs = tuple(s for s in (env.get("METASEG_IMAGERY_SUBDOMAINS") or "abc").replace(",", "") if s.strip())
    return ImagerySource(template, attribution, subs or ("a",))


def require_source() -> ImagerySource:
    src = source_from_env()
    if src is None:
        raise ImageryError("imagery fetching is switched off on this server (METASEG_IMAGERY_URL=off)")
    return src


def _env_number(name: str, default: float, lo: float, hi: float) -> float:
    raw = (os.environ.get(name) or "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        return default
    return min(hi, max(lo, value)) if math.isfinite(value) else default


def timeout_s() -> float:
    return _env_number("METASEG_IMAGERY_TIMEOUT", 10.0, 0.5, 60.0)


def max_tiles() -> int:
    return int(_env_number("METASEG_IMAGERY_MAX_TILES", 36, 1, 256))


def cache_dir() -> Path:
    explicit = os.environ.get("METASEG_IMAGERY_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("METASEG_CACHE_DIR")
    return (Path(base) if base else Path.home() / ".cache" / "metaseg") / "imagery"


# --------------------------------------------------------------------------- Web Mercator maths
def resolution_m(zoom: int) -> float:
    """Nominal Web Mercator metres per pixel at ``zoom`` (at the equator)."""
    return 2 * MERCATOR_HALF_M / (TILE_SIZE * 2**zoom)


def ground_resolution_m(lat: float, zoom: int) -> float:
    """True ground metres per pixel of Web Mercator tiles at latitude ``lat``."""
    return resolution_m(zoom) * math.cos(math.radians(lat))


def default_zoom(lat: float, target_m: float = TARGET_GSD_M) -> int:
    """The zoom in :data:`ZOOMS` whose ground resolution at ``lat`` is nearest ``target_m`` (log scale)."""
    return min(ZOOMS, key=lambda z: abs(math.log(ground_resolution_m(lat, z) / target_m)))


def global_pixel(lat: float, lon: float, zoom: int) -> tuple[float, float]:
    """Pixel coordinates of a WGS84 point in the Web Mercator world image at ``zoom``."""
    world = TILE_SIZE * 2**zoom
    lat = max(-MERCATOR_MAX_LAT, min(MERCATOR_MAX_LAT, lat))
    x = (lon + 180.0) / 360.0 * world
    s = math.sin(math.radians(lat))
    y = (0.5 - math.log((1 + s) / (1 - s)) / (4 * math.pi)) * world
    return x, y


def check_zoom(zoom: Any) -> int:
    try:
        z = int(zoom)
    except (TypeError, ValueError):
        raise ImageryError(f"zoom must be one of {', '.join(map(str, ZOOMS))}, not {str(zoom)[:20]!r}") from None
    if z not in ZOOMS or (isinstance(zoom, float) and zoom != z):
        raise ImageryError(f"zoom must be one of {', '.join(map(str, ZOOMS))}, not {str(zoom)[:20]}")
    return z


@dataclass(frozen=True)
class Window:
    """A ``size``×``size`` pixel window of the world image at ``zoom`` and the tiles it needs."""

    zoom: int
    x0: int  # global pixel column of the left edge
    y0: int  # global pixel row of the top edge
    size: int

    @property
    def tiles(self) -> list[tuple[int, int]]:
        t0x, t0y = self.x0 // TILE_SIZE, self.y0 // TILE_SIZE
        t1x, t1y = (self.x0 + self.size - 1) // TILE_SIZE, (self.y0 + self.size - 1) // TILE_SIZE
        return [(tx, ty) for ty in range(t0y, t1y + 1) for tx in range(t0x, t1x + 1)]

    @property
    def transform(self):
        """Affine transform of the window in EPSG:3857 metres."""
        from rasterio.transform import from_origin

        res = resolution_m(self.zoom)
        return from_origin(-MERCATOR_HALF_M + self.x0 * res, MERCATOR_HALF_M - self.y0 * res, res, res)


def window_around(lat: float, lon: float, zoom: int, size: int = DEFAULT_SIZE) -> Window:
    """The window of ``size`` pixels centred on the point (shifted inside the world at its edges)."""
    world = TILE_SIZE * 2**zoom
    size = min(size, world)
    px, py = global_pixel(lat, lon, zoom)
    x0 = int(round(px - size / 2))
    y0 = int(round(py - size / 2))
    x0 = max(0, min(world - size, x0))
    y0 = max(0, min(world - size, y0))
    return Window(zoom, x0, y0, size)


def window_centre_lat(win: Window) -> float:
    """Latitude of the centre of a window (differs from the asked point where it was shifted)."""
    world = TILE_SIZE * 2**win.zoom
    y = (win.y0 + win.size / 2) / world
    return math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * y))))


def check_mercator_lat(lat: float) -> float:
    """Refuse latitudes Web Mercator tile servers do not cover (beyond ±85.0511°)."""
    if abs(lat) > MERCATOR_MAX_LAT:
        raise ImageryError(
            f"latitude {lat:.4f}° is beyond ±{MERCATOR_MAX_LAT:.4f}°, where Web Mercator imagery ends: "
            "XYZ tile servers have no imagery there; upload a tile of that area instead")
    return lat


# --------------------------------------------------------------------------- rate limit
class RateLimiter:
    """At most ``calls`` requests per ``period_s`` seconds per key (a session); thread-safe."""

    def __init__(self, calls: int = 6, period_s: float = 60.0, what: str = "imagery requests",
                 error: type[Exception] | None = None) -> None:
        self.calls, self.period_s, self.what = calls, period_s, what
        self.error = error or ImageryError
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, key: str) -> None:
        """Count one request of ``key``; raise :class:`ImageryError` if it is over the limit."""
        now = time.monotonic()
        with self._lock:
            if len(self._seen) > 10_000:  # forget idle sessions
                self._seen = {k: q for k, q in self._seen.items() if q and now - q[-1] < self.period_s}
            q = self._seen.setdefault(key, deque())
            while q and now - q[0] >= self.period_s:
                q.popleft()
            if len(q) >= self.calls:
                wait = self.period_s - (now - q[0])
                raise self.error(
                    f"too many {self.what} ({self.calls} per {self.period_s:.0f} s): try again in {wait:.0f} s")
            q.append(now)


# --------------------------------------------------------------------------- fetching
def _decode(data: bytes, what: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            rgb = im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        head = data[:40].decode("latin-1", "replace").split("\n")[0].strip()
        raise ImageryError(f"{what} is not an image ({len(data)} bytes starting {head[:30]!r})") from exc
    if rgb.size != (TILE_SIZE, TILE_SIZE):
        rgb = rgb.resize((TILE_SIZE, TILE_SIZE), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def _download(url: str, timeout: float) -> bytes:
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "image/*"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - URL from the server's env
            return resp.read(8 * 2**20 + 1)[: 8 * 2**20]
    except urllib.error.HTTPError as exc:
        raise ImageryError(f"imagery server answered HTTP {exc.code} for tile {_short(url)}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ImageryError(f"imagery server {urllib.parse.urlsplit(url).netloc} unreachable: "
                           f"{' '.join(str(reason).split())[:120]}") from None


def _short(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.netloc}{parts.path}"[-80:]


def fetch_tile(source: ImagerySource, z: int, x: int, y: int, *, timeout: float | None = None,
               cache: Path | None = None) -> tuple[np.ndarray, bool]:
    """One 256×256 RGB tile (from the cache when it has it): ``(pixels, came_from_cache)``."""
    folder = (cache or cache_dir()) / source.key / str(z) / str(x)
    path = folder / f"{y}.img"
    if path.is_file():
        try:
            pixels = _decode(path.read_bytes(), "cached tile")
            with contextlib.suppress(OSError):
                os.utime(path)  # recently used: the size bound (cachebound.trim) removes the oldest first
            return pixels, True
        except ImageryError:
            path.unlink(missing_ok=True)
        except OSError:  # removed meanwhile (the size bound): download it again
            pass
    url = source.url(z, x, y)
    data = _download(url, timeout if timeout is not None else timeout_s())
    pixels = _decode(data, f"tile {z}/{x}/{y} from {source.host}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{y}.{os.getpid()}.{threading.get_ident()}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError:  # a read-only cache is no reason to fail
        pass
    return pixels, False


@dataclass
class ImageryResult:
    """A fetched mosaic written as a GeoTIFF."""

    path: Path
    lat: float
    lon: float
    zoom: int
    gsd_m: float  # ground metres per pixel at ``lat``
    size: int
    tiles: int
    cached: int
    seconds: float
    attribution: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "lat": self.lat, "lon": self.lon, "zoom": self.zoom, "gsd_m": self.gsd_m,
                "size": self.size, "tiles": self.tiles, "cached": self.cached, "seconds": round(self.seconds, 3),
                "attribution": self.attribution}


def fetch_imagery(lat: Any, lon: Any, zoom: Any = None, out: str | os.PathLike = "imagery.tif", *,
                  size: int = DEFAULT_SIZE, source: ImagerySource | None = None) -> ImageryResult:
    """Download the tiles around (lat, lon), mosaic ``size``² pixels, write a GeoTIFF (EPSG:3857).

    Args:
        lat, lon: WGS84 degrees (validated; beyond ±85.0511°, where Web Mercator ends, refused;
            near the edge of the world image the window is shifted inside it and ``gsd_m`` is
            that of the window's centre).
        zoom: one of :data:`ZOOMS`, or ``None`` for :func:`default_zoom` (about 0.5 m/px).
        out: the GeoTIFF to write (its folder must exist).
        size: mosaic side in pixels (256–2048, bounded by :func:`max_tiles`).
        source: the server; default :func:`require_source` (the environment).
    """
    import rasterio

    from metaseg.climate import validate

    lat_f, lon_f = validate(lat, lon)
    check_mercator_lat(lat_f)
    z = default_zoom(lat_f) if zoom in (None, "", "auto") else check_zoom(zoom)
    size = int(size)
    if not 256 <= size <= 2048:
        raise ImageryError(f"mosaic size must be 256-2048 px, not {size}")
    src = source or require_source()
    win = window_around(lat_f, lon_f, z, size)
    tiles = win.tiles
    cap = max_tiles()
    if len(tiles) > cap:
        raise ImageryError(f"{len(tiles)} tiles needed but at most {cap} per request (METASEG_IMAGERY_MAX_TILES)")
    t0 = time.perf_counter()
    timeout, cache = timeout_s(), cache_dir()
    deadline = t0 + 3 * timeout + 5
    t0x, t0y = tiles[0]
    ntx, nty = tiles[-1][0] - t0x + 1, tiles[-1][1] - t0y + 1
    canvas = np.zeros((nty * TILE_SIZE, ntx * TILE_SIZE, 3), np.uint8)
    cached = 0
    pool = ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="imagery")
    futures = {pool.submit(fetch_tile, src, z, tx, ty, timeout=timeout, cache=cache): (tx, ty) for tx, ty in tiles}
    try:
        for fut, (tx, ty) in futures.items():
            left = deadline - time.perf_counter()
            try:
                if left <= 0:
                    raise TimeoutError
                pixels, hit = fut.result(timeout=left)
            except TimeoutError:
                raise ImageryError(f"imagery server {src.host} too slow: gave up after {deadline - t0:.0f} s") from None
            cached += hit
            gx, gy = (tx - t0x) * TILE_SIZE, (ty - t0y) * TILE_SIZE
            canvas[gy:gy + TILE_SIZE, gx:gx + TILE_SIZE] = pixels
    finally:  # on failure, drop the tiles not started yet instead of waiting for them
        pool.shutdown(wait=False, cancel_futures=True)
    ox, oy = win.x0 - t0x * TILE_SIZE, win.y0 - t0y * TILE_SIZE
    mosaic = canvas[oy:oy + size, ox:ox + size]
    out = Path(out)
    profile = {
        "driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8",
        "crs": "EPSG:3857", "transform": win.transform, "compress": "deflate", "photometric": "RGB",
    }
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(np.moveaxis(mosaic, -1, 0))
        dst.update_tags(TIFFTAG_COPYRIGHT=src.attribution[:500], TIFFTAG_SOFTWARE=USER_AGENT.split(" (")[0],
                        IMAGERY_ZOOM=str(z), IMAGERY_HOST=src.host)
    if cached < len(tiles):  # new tiles were written: keep the cache under its bound
        from metaseg.cachebound import budget_bytes, trim

        trim(cache, budget_bytes("METASEG_IMAGERY_CACHE_MB", 512))
    gsd = ground_resolution_m(window_centre_lat(win), z)  # what the tile's own transform says
    return ImageryResult(path=out, lat=lat_f, lon=lon_f, zoom=z, gsd_m=gsd, size=size,
                         tiles=len(tiles), cached=cached, seconds=time.perf_counter() - t0,
                         attribution=src.attribution)
