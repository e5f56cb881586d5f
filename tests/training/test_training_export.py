"""training.export: the hub-style folder, its model card, and every way it loads (folder path,
``metaseg predict --checkpoint DIR`` on a real GeoTIFF, the app's model cache, a hub id through a
local stand-in), plus ``--push`` offline / failing / succeeding against a fake ``HfApi``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.fixtures.datasets import make_openearthmap
from training.config import load_config
from training.export import main as export_main
from training.train import train

REPO = Path(__file__).resolve().parents[2]
TINY = {"max_tokens": 32, "caf_dim": 32, "caf_heads": 4, "embed_dim": 32, "decoder_dim": 16, "pos_grid": 4}
EXAMPLE_TIF = REPO / "static" / "examples" / "iguacu_landsat8.tif"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from prompts_db import PromptStore

    base = tmp_path_factory.mktemp("export")
    oem = make_openearthmap(base / "oem", n=8, size=32, seed=5)
    out = base / "run"
    train(load_config(None, [
        "dataset=openearthmap", f"data_root={oem}", f"out_dir={out}", "image_size=32", "batch_size=2",
        "device=cpu", "amp=false", "progress=false", "threads=1", "num_workers=0", "epochs=1", "max_steps=2",
        "tensorboard=false", "model=metasegnet_demo", "pretrained=none", f"model_overrides={json.dumps(TINY)}",
    ]), store=PromptStore(base / "p.sqlite"))
    return out


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("hub") / "oem-demo"
    assert export_main(["--checkpoint", str(run / "best.safetensors"), "--out", str(out)]) == 0
    return out


def test_export_writes_a_hub_folder_with_a_filled_model_card(run, exported):
    assert sorted(p.name for p in exported.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    meta = json.loads((exported / "config.json").read_text())
    src = json.loads((run / "best.json").read_text())
    assert meta["config"] == src["config"] and meta["class_set"] == "openearthmap"
    assert meta["export"]["source"].endswith("best.safetensors")
    card = (exported / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: metaseg")
    assert "- openearthmap" in card and "`climate`" in card  # dataset and prompt mode
    for name in src["val"]["per_class"]:  # per-class validation metrics from the run
        assert f"| {name} |" in card
    assert src["units"] == "percent" and f"mIoU **{src['val']['miou']:.2f}**" in card  # not x100 twice
    assert "training time" in card and f"({src['train_seconds']:.0f} s)" in card
    assert "0.25–0.5 m/px" in card  # OpenEarthMap's ground sample distance (checkpoint gsd_range_m)
    assert "## Limits" in card and "random weights (`pretrained=none`)" in card and "Short run" in card
    assert '"max_steps": 2' in card  # the training config
    assert not [p for p in exported.rglob("*") if p.suffix in (".pt", ".pth", ".pkl", ".bin")]


def test_export_folder_loads_like_the_checkpoint(run, exported):
    from metaseg.checkpoints import load_checkpoint

    a, _ = load_checkpoint(run / "best.safetensors")
    b, meta = load_checkpoint(exported)
    assert meta["dataset"] == "openearthmap"
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(a(x, text="p").logits, b(x, text="p").logits)
    from metaseg.errors import CheckpointError

    with pytest.raises(CheckpointError, match="training.export"):
        load_checkpoint(exported.parent)  # a folder without the files names the tool


def test_predict_cli_reads_the_folder_on_a_real_geotiff(exported, tmp_path, capsys):
    from metaseg.cli import main

    out = tmp_path / "mask.tif"
    rc = main(["predict", str(EXAMPLE_TIF), "--model", "metasegnet_demo", "--checkpoint", str(exported),
               "--out", str(out), "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    res = json.loads(captured.out)
    assert res["class_set"] == "openearthmap" and out.is_file()
    import rasterio

    with rasterio.open(out) as src, rasterio.open(EXAMPLE_TIF) as tile:
        assert src.crs == tile.crs and (src.width, src.height) == (tile.width, tile.height)


def test_app_model_cache_loads_the_folder(exported):
    from studio.models import ModelCache

    cache = ModelCache()
    cache.set_source("metasegnet", str(exported))
    loaded = cache.get("metasegnet")
    assert loaded.source == str(exported) and loaded.predictor.uses_text
    assert loaded.predictor.class_set.name == "openearthmap"


def test_hub_id_loads_through_hf_hub_download(exported, monkeypatch, tmp_path):
    import huggingface_hub

    from metaseg.checkpoints import load_checkpoint

    calls = []

    def fake_download(repo_id, filename, cache_dir=None, **kw):  # a local stand-in for the hub
        calls.append((repo_id, filename))
        path = exported / filename
        if repo_id != "metaseg/oem-demo" or not path.is_file():
            raise FileNotFoundError(f"{repo_id}/{filename}")
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    model, meta = load_checkpoint("metaseg/oem-demo")
    assert ("metaseg/oem-demo", "config.json") in calls and ("metaseg/oem-demo", "model.safetensors") in calls
    assert meta["export"] and model.config.class_set == "openearthmap"


def test_push_offline_is_one_line_and_keeps_the_folder(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "pushme"
    rc = export_main(["--checkpoint", str(run / "best"), "--out", str(out), "--push", "me/oem-demo", "--no-verify"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("error: cannot push to me/oem-demo")
    assert "HF_HUB_OFFLINE" in err and (out / "model.safetensors").is_file()


def test_push_uses_huggingface_hub(run, tmp_path, capsys, monkeypatch):
    import huggingface_hub

    import metaseg.models.image_encoders as enc

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(enc, "_hub_reachable", lambda timeout=3.0: True)
    seen = {}

    class FakeApi:
        def create_repo(self, repo_id, exist_ok=False, private=False):
            seen["repo"] = (repo_id, exist_ok, private)

        def upload_folder(self, repo_id, folder_path, commit_message=""):
            seen["files"] = sorted(p.name for p in Path(folder_path).iterdir())

            class Info:
                repo_url = f"https://huggingface.co/{repo_id}"

            return Info()

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    out = tmp_path / "pushed"
    rc = export_main(["--checkpoint", str(run / "best"), "--out", str(out), "--push", "me/oem-demo", "--json",
                      "--no-verify"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 0 and res["pushed"] and res["url"] == "https://huggingface.co/me/oem-demo"
    assert seen == {"repo": ("me/oem-demo", True, False), "files": ["README.md", "config.json", "model.safetensors"]}
    assert "# me/oem-demo" in (out / "README.md").read_text()

    class DownApi(FakeApi):
        def create_repo(self, *a, **k):
            raise ConnectionError("Name or service not known")

    monkeypatch.setattr(huggingface_hub, "HfApi", DownApi)
    rc = export_main(["--checkpoint", str(run / "best"), "--out", str(out), "--push", "me/oem-demo", "--no-verify"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "ConnectionError" in err
