"""CLI contract of ``climate`` and ``locate`` (DESIGN.md §7): JSON keys, exit codes, negatives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from metaseg.cli import main
from tests.fixtures.geotiffs import IGUACU_TIF, write_broken_files, write_geotiff, write_photo

ROOT = Path(__file__).resolve().parents[2]
CLIMATE_KEYS = {"lat", "lon", "code", "name", "group", "color"}
LOCATE_KEYS = {"lat", "lon", "source", "crs", "width", "height", "bands", "dtype", "zone"}


def _run(argv, capsys):
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def _subprocess(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "metaseg", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


# ----------------------------------------------------------------------------- climate
def test_climate_potsdam_subprocess():
    proc = _subprocess("climate", "52.39", "13.06", "--json")
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert set(d) == CLIMATE_KEYS
    assert d["code"] == "Cfb" and d["name"] == "Temperate, no dry season, warm summer"
    assert d["group"] == "Temperate" and d["color"] == "#64FF50"
    assert d["lat"] == 52.39 and d["lon"] == 13.06


def test_climate_negative_coordinates_subprocess():
    proc = _subprocess("climate", "-33.9", "18.4")
    assert proc.returncode == 0, proc.stderr
    assert "Csb" in proc.stdout and proc.stdout.count("\n") == 1


@pytest.mark.parametrize(
    "argv,code",
    [
        (["-33.9", "18.4"], "Csb"),
        (["-22.9", "-43.2"], "Aw"),
        (["--json", "-34.6", "-58.4"], "Cfa"),
        (["-3.1", "-60", "--json"], "Af"),
        (["52.39", "373.06"], None),  # beyond ±360: rejected below
        (["37.77", "237.55"], "Csb"),  # San Francisco as 0..360
        (["-1e1", "-5e1"], "Aw"),  # exponent forms (central Brazil, 10°S 50°W)
    ],
)
def test_climate_negative_and_wrapped(capsys, argv, code):
    rc, out, err = _run(["climate", *argv, "--json"] if "--json" not in argv else ["climate", *argv], capsys)
    if code is None:
        assert rc == 2 and "longitude" in err
        return
    assert rc == 0, err
    d = json.loads(out)
    assert d["code"] == code and -180 <= d["lon"] < 180


def test_climate_ocean(capsys):
    rc, out, _ = _run(["climate", "0", "-30", "--json"], capsys)
    assert rc == 0
    d = json.loads(out)
    assert d["code"] is None and d["reason"] == "ocean"
    assert set(d) == CLIMATE_KEYS | {"reason"}
    rc, out, _ = _run(["climate", "0", "-30"], capsys)
    assert rc == 0 and "ocean" in out


@pytest.mark.parametrize("lat,lon", [("95", "0"), ("nan", "0"), ("0", "inf"), ("abc", "0"), ("0", "1000")])
def test_climate_invalid_exit_2_one_line(capsys, lat, lon):
    rc, out, err = _run(["climate", lat, lon, "--json"], capsys)
    assert rc == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_climate_invalid_subprocess_no_traceback():
    proc = _subprocess("climate", "95", "0", "--json")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().count("\n") == 0 and "latitude" in proc.stderr


def test_climate_human_line(capsys):
    rc, out, _ = _run(["climate", "30.0", "31.2"], capsys)
    assert rc == 0 and "BWh" in out and "Arid, desert, hot" in out


# ----------------------------------------------------------------------------- locate
def test_locate_example_subprocess():
    proc = _subprocess("locate", str(IGUACU_TIF), "--json")
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert LOCATE_KEYS <= set(d) <= LOCATE_KEYS | {"footprint", "gsd_m"}
    assert d["source"] == "geotiff" and d["crs"] == "EPSG:32621"
    assert (d["width"], d["height"], d["bands"], d["dtype"]) == (512, 512, 3, "uint16")
    assert d["zone"]["code"] == "Cfa" and set(d["zone"]) == CLIMATE_KEYS
    assert len(d["footprint"]) == 4


def test_locate_geotiff_utm_south(tmp_path, capsys):
    path = write_geotiff(tmp_path / "rio.tif", -22.9, -43.2, crs="EPSG:32723", bands=4, dtype="uint16")
    rc, out, err = _run(["locate", str(path), "--json"], capsys)
    assert rc == 0, err
    d = json.loads(out)
    assert d["zone"]["code"] == "Aw" and d["bands"] == 4 and d["dtype"] == "uint16"
    assert d["lat"] == pytest.approx(-22.9, abs=1e-4)


def test_locate_exif_jpeg(tmp_path, capsys):
    path = write_photo(tmp_path / "drone.jpg", 52.39, 13.06)
    rc, out, _ = _run(["locate", str(path), "--json"], capsys)
    d = json.loads(out)
    assert rc == 0 and d["source"] == "exif" and d["crs"] is None and d["zone"]["code"] == "Cfb"
    assert d["footprint"] is None


def test_locate_plain_png_has_null_zone(tmp_path, capsys):
    path = write_photo(tmp_path / "plain.png")
    rc, out, _ = _run(["locate", str(path), "--json"], capsys)
    d = json.loads(out)
    assert rc == 0 and d["source"] == "none" and d["lat"] is None and d["zone"] is None
    rc, out, _ = _run(["locate", str(path)], capsys)
    assert rc == 0 and "location: none" in out


def test_locate_ocean_tile(tmp_path, capsys):
    path = write_geotiff(tmp_path / "atlantic.tif", 0.0, -30.0, crs="EPSG:4326")
    rc, out, _ = _run(["locate", str(path), "--json"], capsys)
    d = json.loads(out)
    assert rc == 0 and d["zone"]["code"] is None and d["zone"]["reason"] == "ocean"


def test_locate_human_output(capsys):
    rc, out, _ = _run(["locate", str(IGUACU_TIF)], capsys)
    assert rc == 0 and "EPSG:32621" in out and "Cfa" in out and "GeoTIFF" in out


def test_locate_bad_files_exit_2(tmp_path, capsys):
    broken = write_broken_files(tmp_path)
    for path in [tmp_path / "missing.tif", broken["empty"], broken["garbage"], broken["text"], tmp_path]:
        rc, out, err = _run(["locate", str(path), "--json"], capsys)
        assert rc == 2 and out == "", path
        assert err.startswith("error: ") and err.count("\n") == 1
