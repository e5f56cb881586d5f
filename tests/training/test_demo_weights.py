"""The shipped CPU demo pair (metaseg/weights): offline loading, config, sane predictions, CLI."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
import torch
from PIL import Image

from metaseg.checkpoints import WEIGHTS_DIR, demo_checkpoint_path, load_checkpoint
from metaseg.classes import get_class_set
from training.synth import M_BRIGHT, M_DARK, M_STRIPED, generate_tile, partner_zone

NAMES = ("metasegnet_demo", "baseline_demo")
#: A tile from a seed no demo training used (training data: seed 0; ablation test set: 12345).
TILE = dict(zone="Cfa", size=128, seed=4242, index=4)


def _block_network(mp: pytest.MonkeyPatch) -> None:
    """Offline hub flags, and any socket connection attempt raises."""
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("TRANSFORMERS_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    mp.setattr(socket.socket, "connect", refuse)
    mp.setattr(socket, "create_connection", refuse)


@pytest.fixture()
def no_network(monkeypatch):
    _block_network(monkeypatch)


@pytest.fixture(scope="module")
def shipped():
    """Both shipped models via ``demo_checkpoint_path``, loaded once with the network blocked."""
    with pytest.MonkeyPatch.context() as mp:
        _block_network(mp)
        return {name: load_checkpoint(demo_checkpoint_path(name), expected_name=name) for name in NAMES}


@pytest.fixture(scope="module")
def tile():
    t = generate_tile(**TILE)
    label = get_class_set("openearthmap").decode(t.label)
    ambiguous = np.isin(t.material, (M_STRIPED, M_BRIGHT, M_DARK))
    image = torch.from_numpy(t.image).permute(2, 0, 1).float().div(255.0)[None]
    return image, label, ambiguous


def test_weights_are_shipped_small_and_half_precision():
    total = 0
    for name in NAMES:
        path = demo_checkpoint_path(name)
        assert path.parent == WEIGHTS_DIR and path.with_suffix(".json").is_file()
        total += path.stat().st_size
        meta = json.loads(path.with_suffix(".json").read_text())
        assert meta["weights_dtype"] == "float16"
        assert meta["dataset"] == "synthearth" and meta["train_data"]["seed"] == 0
    assert total <= 60e6
    assert (WEIGHTS_DIR / "MODEL_CARD.md").is_file()


def test_pair_loads_offline_with_expected_config(shipped):
    configs = {}
    for name in NAMES:
        model, meta = shipped[name]
        cfg = model.config
        configs[name] = cfg
        assert not model.training
        assert cfg.name == name and cfg.class_set == meta["class_set"] == "openearthmap"
        assert cfg.num_classes == meta["num_classes"] == 8
        assert cfg.encoder == "tf_efficientnet_lite0"
        assert next(model.parameters()).dtype == torch.float32  # fp16 on disk, fp32 in memory
    assert configs["metasegnet_demo"].uses_text and not configs["baseline_demo"].uses_text
    assert configs["metasegnet_demo"].text_encoder == "minilm"
    # same encoder, head and training settings: only the text path differs
    a, b = configs["metasegnet_demo"].to_dict(), configs["baseline_demo"].to_dict()
    assert {k for k in a if a[k] != b[k]} == {"name", "uses_text"}
    ta = json.loads(demo_checkpoint_path("metasegnet_demo").with_suffix(".json").read_text())["train_config"]
    tb = json.loads(demo_checkpoint_path("baseline_demo").with_suffix(".json").read_text())["train_config"]
    assert {k for k in ta if ta[k] != tb[k]} == {"model", "out_dir"}


def test_sane_predictions_on_a_synth_tile(shipped, tile):
    image, label, ambiguous = tile
    zone = TILE["zone"]
    with torch.inference_mode():
        base = shipped["baseline_demo"][0](image).logits.argmax(1)[0].numpy()
        model, meta = shipped["metasegnet_demo"]
        prompts = meta["train_prompts"]  # the exact texts it was trained with, per zone
        right = model(image, text=prompts[zone]).logits.argmax(1)[0].numpy()
        wrong = model(image, text=prompts[partner_zone(zone)]).logits.argmax(1)[0].numpy()
    for pred in (base, right):
        assert pred.shape == label.shape
        assert (pred[~ambiguous] == label[~ambiguous]).mean() > 0.7  # the unambiguous surfaces
        assert len(np.unique(pred)) >= 3
    # MetaSegNet reads the prompt: the partner zone's prompt flips the ambiguous materials.
    acc_right = (right[ambiguous] == label[ambiguous]).mean()
    acc_wrong = (wrong[ambiguous] == label[ambiguous]).mean()
    assert ambiguous.sum() > 100
    assert acc_right > acc_wrong + 0.3


def test_predict_cli_uses_shipped_metasegnet(capsys, tmp_path, no_network):
    from metaseg.cli import main

    t = generate_tile(**dict(TILE, size=64))
    src = tmp_path / "tile.png"
    Image.fromarray(t.image).save(src)
    out = tmp_path / "m.png"
    code = main(["predict", str(src), "--model", "metasegnet_demo", "--out", str(out), "--json"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(stdout)
    assert report["model"] == "metasegnet_demo" and report["checkpoint"] == "shipped"
    assert report["class_set"] == "openearthmap"
    assert abs(sum(report["class_fraction"].values()) - 1.0) < 1e-3
    mask = np.asarray(Image.open(out))
    assert mask.shape[:2] == (64, 64)
