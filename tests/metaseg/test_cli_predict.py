"""``python -m metaseg predict``: masks, JSON contract, prompt resolution and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.transform import Affine

from metaseg.cli import main

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Random-weight demo-pair checkpoints (small heads, no package weights) in a temp dir."""
    import torch

    from metaseg.checkpoints import save_checkpoint
    from metaseg.models import create_model

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("ckpt")
    paths = {}
    for name in ("metasegnet_demo", "baseline_demo"):
        model = create_model(name, pretrained="none", caf_dim=32, caf_heads=2, decoder_dim=16, embed_dim=32)
        paths[name] = save_checkpoint(model, out / name)
    return paths


@pytest.fixture()
def png_tile(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "tile.png"
    Image.fromarray(rng.integers(0, 256, (72, 100, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture()
def geotiff_tile(tmp_path) -> Path:
    """A 3-band uint8 GeoTIFF near Potsdam (UTM 33N), zone Cfb."""
    rng = np.random.default_rng(1)
    path = tmp_path / "potsdam.tif"
    transform = Affine(0.5, 0.0, 368000.0, 0.0, -0.5, 5808000.0)
    with rasterio.open(path, "w", driver="GTiff", width=90, height=60, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=transform) as dst:
        dst.write(rng.integers(0, 256, (3, 60, 90), dtype=np.uint8))
    return path


def _run(capsys, argv: list[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_metasegnet_on_georeferenced_tile_uses_zone_prompt(capsys, checkpoints, geotiff_tile, tmp_path):
    out = tmp_path / "mask.tif"
    code, stdout, err = _run(capsys, ["predict", str(geotiff_tile), "--model", "metasegnet_demo",
                                      "--checkpoint", str(checkpoints["metasegnet_demo"]),
                                      "--window", "64", "--out", str(out), "--json"])
    assert code == 0, err
    res = json.loads(stdout)
    for key in ("model", "class_set", "classes", "class_fraction", "prompt", "seconds"):
        assert key in res
    assert res["model"] == "metasegnet_demo" and res["class_set"] == "openearthmap"
    assert res["zone"] == "Cfb" and res["prompt_source"] == "zone" and "Cfb" in res["prompt"]
    assert res["windows"] > 1
    assert sum(res["class_fraction"].values()) == pytest.approx(1.0, abs=1e-4)
    with rasterio.open(geotiff_tile) as src, rasterio.open(out) as dst:
        assert dst.crs == src.crs and dst.transform == src.transform
        assert dst.shape == src.shape and dst.colormap(1)[3][:3] == (255, 255, 255)
        assert dst.read(1).max() < 8


def test_baseline_ignores_prompt_and_writes_png(capsys, checkpoints, png_tile, tmp_path):
    out = tmp_path / "mask.png"
    code, stdout, err = _run(capsys, ["predict", str(png_tile), "--model", "baseline_demo",
                                      "--checkpoint", str(checkpoints["baseline_demo"]),
                                      "--prompt", "ignored text", "--tta", "--out", str(out), "--json"])
    assert code == 0, err
    res = json.loads(stdout)
    assert res["prompt"] is None and res["tta"] is True and res["zone"] is None
    assert "ignored" in err
    img = Image.open(out)
    assert img.mode == "P" and img.size == (100, 72)


def test_ocean_location_falls_back_to_generic_prompt(capsys, checkpoints, png_tile, tmp_path):
    code, stdout, err = _run(capsys, ["predict", str(png_tile), "--model", "metasegnet_demo",
                                      "--checkpoint", str(checkpoints["metasegnet_demo"]),
                                      "--lat", "0", "--lon", "-30", "--out", str(tmp_path / "m.tif"), "--json"])
    assert code == 0, err
    res = json.loads(stdout)
    assert res["zone"] is None and res["prompt_source"] == "generic" and res["prompt"]
    assert err.startswith("warning:") and "generic prompt" in err


def test_explicit_prompt_and_human_output(capsys, checkpoints, png_tile, tmp_path):
    code, stdout, err = _run(capsys, ["predict", str(png_tile), "--model", "metasegnet_demo",
                                      "--checkpoint", str(checkpoints["metasegnet_demo"]),
                                      "--prompt", "tropical rainforest with rivers", "--out", str(tmp_path / "m.png")])
    assert code == 0, err
    assert "metasegnet_demo" in stdout and "tropical rainforest with rivers" in stdout and " %" in stdout


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--prompt", "x", "--prompt-id", "1"], "either --prompt or --prompt-id"),
        (["--lat", "95", "--lon", "10"], "latitude"),
        (["--lat", "abc", "--lon", "10"], "latitude"),
        (["--lat", "52"], "both --lat and --lon"),
        (["--prompt-id", "x1"], "--prompt-id"),
        (["--out-override", "mask.jpg"], "--out"),
        (["--device", "tpu"], "--device"),
    ],
)
def test_bad_arguments_exit_2(capsys, png_tile, tmp_path, extra, message):
    out = str(tmp_path / "m.png")
    if extra[0] == "--out-override":
        out, extra = str(tmp_path / extra[1]), []
    code, stdout, err = _run(capsys, ["predict", str(png_tile), "--model", "metasegnet_demo", "--out", out, *extra])
    assert code == 2 and stdout == ""
    assert err.startswith("error:") and err.count("\n") == 1 and message in err


def test_bad_model_inputs_exit_2(capsys, png_tile, tmp_path):
    out = str(tmp_path / "m.png")
    code, _, err = _run(capsys, ["predict", str(png_tile), "--model", "nosuchnet", "--out", out])
    assert code == 2 and "unknown model" in err and "metasegnet_demo" in err
    code, _, err = _run(capsys, ["predict", str(png_tile), "--model", "metasegnet_swin_b", "--out", out])
    assert code == 2 and "--checkpoint" in err and err.count("\n") == 1
    code, _, err = _run(capsys, ["predict", str(png_tile), "--model", "baseline_demo",
                                 "--checkpoint", str(tmp_path / "missing.safetensors"), "--out", out])
    assert code == 2 and "not found" in err


def test_missing_and_corrupt_images_exit_2(capsys, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    for image in (tmp_path / "nope.tif", bad):
        code, _, err = _run(capsys, ["predict", str(image), "--model", "baseline_demo", "--out", str(tmp_path / "m.png")])
        assert code == 2 and err.startswith("error:") and err.count("\n") == 1


def test_unknown_prompt_id_exit_2(capsys, png_tile, tmp_path):
    code, _, err = _run(capsys, ["predict", str(png_tile), "--model", "metasegnet_demo", "--checkpoint",
                                 "unused.safetensors", "--prompt-id", "99999", "--out", str(tmp_path / "m.png")])
    assert code == 2 and "99999" in err


def test_shipped_weights_are_used_without_checkpoint(capsys, png_tile, tmp_path):
    """Without --checkpoint a *_demo model uses the weights shipped in metaseg/weights/ (offline)."""
    from metaseg.checkpoints import WEIGHTS_DIR

    assert (WEIGHTS_DIR / "baseline_demo.safetensors").is_file()  # they ship with the project
    code, stdout, err = _run(capsys, ["predict", str(png_tile), "--model", "baseline_demo",
                                      "--out", str(tmp_path / "m.png"), "--json"])
    assert code == 0, err
    assert json.loads(stdout)["checkpoint"] == "shipped"
    assert (tmp_path / "m.png").is_file()


def test_missing_shipped_weights_are_one_clear_line(capsys, png_tile, tmp_path, monkeypatch):
    """A checkout without the weights files says so and how to go on (exit 2, no traceback)."""
    import metaseg.checkpoints as ck

    monkeypatch.setattr(ck, "WEIGHTS_DIR", tmp_path / "empty")
    code, stdout, err = _run(capsys, ["predict", str(png_tile), "--model", "baseline_demo",
                                      "--out", str(tmp_path / "m.png"), "--json"])
    assert code == 2 and stdout == ""
    assert "no shipped weights" in err and "--checkpoint" in err and err.count("\n") == 1
    assert not (tmp_path / "m.png").exists()


def test_subprocess_user_error_has_no_traceback(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-m", "metaseg", "predict", str(tmp_path / "missing.tif"), "--model", "baseline_demo",
         "--out", str(tmp_path / "m.tif"), "--json"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
