"""Where a SynthEarth tile lies: a random location inside its zone, whole footprint in the zone,
and the GeoTIFF georeference (UTM, or EPSG:4326 beyond ±84° latitude)."""

from __future__ import annotations

import math

import numpy as np

from metaseg.errors import ConfigError
from training.synth.zones import PIXEL_SIZE_M


def sample_location(code: str, rng: np.random.Generator) -> tuple[float, float]:
    """A random land point inside Köppen zone ``code`` (:func:`metaseg.climate.sample_location`)."""
    from metaseg.climate import sample_location as climate_sample

    lat, lon = climate_sample(code, rng)
    return float(lat), float(lon)


def georeference(lat: float, lon: float, size: int, pixel_size: float = PIXEL_SIZE_M) -> tuple[str, tuple]:
    """CRS (``EPSG:326xx``/``327xx``, or ``EPSG:4326`` beyond ±84°) and affine transform
    (rasterio order ``a, b, c, d, e, f``) of a ``size``² tile centred on ``(lat, lon)``."""
    if abs(lat) >= 84.0:
        dlat = pixel_size / 111_320.0
        dlon = pixel_size / (111_320.0 * max(math.cos(math.radians(lat)), 1e-3))
        half = size / 2
        return "EPSG:4326", (dlon, 0.0, lon - half * dlon, 0.0, -dlat, lat + half * dlat)
    from rasterio.warp import transform as warp

    zone = int((lon + 180.0) // 6.0) % 60 + 1
    epsg = (32600 if lat >= 0 else 32700) + zone
    xs, ys = warp("EPSG:4326", f"EPSG:{epsg}", [lon], [lat])
    half = size / 2 * pixel_size
    x0, y0 = round(xs[0] - half, 2), round(ys[0] + half, 2)
    return f"EPSG:{epsg}", (pixel_size, 0.0, x0, 0.0, -pixel_size, y0)


def _footprint_zones(crs: str, transform: tuple, size: int) -> list[str | None]:
    """Köppen codes at the centre and the four corners of a georeferenced tile."""
    from metaseg.climate import lookup

    a, _, c, _, e, f = transform
    px = [(size / 2, size / 2), (0.5, 0.5), (size - 0.5, 0.5), (0.5, size - 0.5), (size - 0.5, size - 0.5)]
    xs = [c + a * x for x, _ in px]
    ys = [f + e * y for _, y in px]
    if crs != "EPSG:4326":
        from rasterio.warp import transform as warp

        xs, ys = warp(crs, "EPSG:4326", xs, ys)
    out = []
    for lon, lat in zip(xs, ys, strict=True):
        z = lookup(lat, lon).zone
        out.append(z.code if z is not None else None)
    return out


def place(code: str, size: int, rng: np.random.Generator) -> tuple[float, float, str, tuple]:
    """Sample a location whose whole tile footprint lies in zone ``code`` (centre-only after 20 tries)."""
    first = None
    for _ in range(20):
        lat, lon = sample_location(code, rng)
        crs, transform = georeference(lat, lon, size)
        zones = _footprint_zones(crs, transform, size)
        if first is None and zones[0] == code:
            first = (lat, lon, crs, transform)
        if all(z == code for z in zones):
            return lat, lon, crs, transform
    if first is None:  # pragma: no cover - sample_location guarantees the centre point
        raise ConfigError(f"could not place a tile inside zone {code}")
    return first
