"""Checkpoints: round trip, fp16, stems, hub ids (through a local HF cache), error cases."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from metaseg import checkpoints
from metaseg.checkpoints import demo_checkpoint_path, load_checkpoint, save_checkpoint
from metaseg.errors import CheckpointError, UnknownNameError
from metaseg.models import TextEncoder, create_model

TINY = dict(pretrained=False, caf_dim=32, caf_heads=2, embed_dim=16, decoder_dim=16, max_tokens=16,
            pos_grid=4, queue_size=4)


@pytest.fixture(scope="module")
def text_encoder() -> TextEncoder:
    return TextEncoder("minilm", max_tokens=16)


@pytest.fixture(scope="module")
def model(text_encoder):
    torch.manual_seed(0)
    m = create_model("metasegnet_demo", text_encoder_module=text_encoder, **TINY)
    with torch.no_grad():  # make buffers and weights non-default so the round trip is meaningful
        m.image_encoder.body.bn1.running_mean.uniform_(-0.1, 0.1)
    return m.eval()


@pytest.fixture
def saved(model, tmp_path):
    path = save_checkpoint(model, tmp_path / "ckpt", extra={"prompt": {"zone": "Cfb", "text": "x"}, "metrics": {"miou": 0.5}})
    return path


def _logits(m, x):
    with torch.no_grad():
        return m.eval()(x, "temperate farmland and villages").logits


def test_save_load_identical_outputs(model, saved, text_encoder):
    x = torch.rand(1, 3, 64, 96)
    assert saved.name == "ckpt.safetensors" and saved.with_suffix(".json").is_file()
    assert not any(k.startswith("text_encoder.") for k in load_file(str(saved)))
    meta = json.loads(saved.with_suffix(".json").read_text())
    assert meta["format_version"] == 1 and meta["class_set"] == "openearthmap" and meta["metrics"]["miou"] == 0.5
    assert meta["config"]["text_encoder"] == "minilm" and meta["config"]["caf_dim"] == 32
    for ref in (saved, saved.with_suffix(".json"), saved.with_suffix("")):
        loaded, lmeta = load_checkpoint(ref, text_encoder_module=text_encoder)
        assert lmeta["prompt"]["zone"] == "Cfb"
        torch.testing.assert_close(_logits(loaded, x), _logits(model, x))
    # the text encoder itself is rebuilt from the recorded name when not shared
    loaded, _ = load_checkpoint(saved)
    torch.testing.assert_close(_logits(loaded, x), _logits(model, x))


def test_half_precision_round_trip(model, tmp_path, text_encoder):
    path = save_checkpoint(model, tmp_path / "half.safetensors", half=True)
    assert load_file(str(path))["head.classifier.weight"].dtype == torch.float16
    loaded, meta = load_checkpoint(path, text_encoder_module=text_encoder)
    assert meta["weights_dtype"] == "float16"
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(_logits(loaded, x), _logits(model, x), atol=5e-2, rtol=5e-2)


def test_hub_id_through_local_cache(saved, tmp_path, text_encoder):
    cache = tmp_path / "hub"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snap = cache / "models--someorg--metaseg-demo" / "snapshots" / commit
    snap.mkdir(parents=True)
    shutil.copy(saved, snap / "model.safetensors")
    shutil.copy(saved.with_suffix(".json"), snap / "model.json")
    (cache / "models--someorg--metaseg-demo" / "refs").mkdir()
    (cache / "models--someorg--metaseg-demo" / "refs" / "main").write_text(commit)
    model, meta = load_checkpoint("someorg/metaseg-demo", cache_dir=cache, text_encoder_module=text_encoder)
    assert meta["metrics"]["miou"] == 0.5
    with pytest.raises(CheckpointError, match="hub"):
        load_checkpoint("someorg/absent", cache_dir=cache)


def test_missing_and_corrupt_files(saved, tmp_path, text_encoder):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nothing.safetensors")
    bad_json = tmp_path / "bj"
    shutil.copy(saved, bad_json.with_suffix(".safetensors"))
    bad_json.with_suffix(".json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(bad_json)
    trunc = tmp_path / "tr"
    data = saved.read_bytes()
    trunc.with_suffix(".safetensors").write_bytes(data[: len(data) // 2])
    shutil.copy(saved.with_suffix(".json"), trunc.with_suffix(".json"))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(trunc, text_encoder_module=text_encoder)
    old = tmp_path / "old"
    shutil.copy(saved, old.with_suffix(".safetensors"))
    meta = json.loads(saved.with_suffix(".json").read_text())
    old.with_suffix(".json").write_text(json.dumps(dict(meta, format_version=99)))
    with pytest.raises(CheckpointError, match="format_version"):
        load_checkpoint(old)


def test_mismatched_checkpoints(saved, tmp_path, text_encoder):
    meta = json.loads(saved.with_suffix(".json").read_text())
    wrong = tmp_path / "wrong"
    shutil.copy(saved, wrong.with_suffix(".safetensors"))
    meta["config"]["num_classes"] = 5
    wrong.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_checkpoint(wrong, text_encoder_module=text_encoder)
    meta["config"]["num_classes"] = 8
    meta["config"]["uses_text"] = False
    wrong.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="unexpected"):
        load_checkpoint(wrong)
    meta["config"]["uses_text"] = True
    meta["config"]["bogus_key"] = 1
    wrong.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="bad config"):
        load_checkpoint(wrong)
    with pytest.raises(CheckpointError, match="not 'baseline_demo'"):
        load_checkpoint(saved, expected_name="baseline_demo", text_encoder_module=text_encoder)


def test_reserved_extra_keys_refused(model, tmp_path):
    with pytest.raises(CheckpointError, match="reserved"):
        save_checkpoint(model, tmp_path / "x", extra={"config": {}})


def test_demo_checkpoint_path(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoints, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(CheckpointError, match="no shipped weights"):
        demo_checkpoint_path("metasegnet_demo")
    with pytest.raises(UnknownNameError):
        demo_checkpoint_path("nope")
    (tmp_path / "baseline_demo.safetensors").write_bytes(b"")
    (tmp_path / "baseline_demo.json").write_text("{}")
    assert demo_checkpoint_path("baseline_demo") == tmp_path / "baseline_demo.safetensors"
