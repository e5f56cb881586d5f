"""SegModel (MetaSegNet + baseline): shapes, gradients, frozen text encoder, prompts, registry."""

from __future__ import annotations

import pytest
import torch

from metaseg.errors import CheckpointError, ConfigError, UnknownNameError
from metaseg.models import SegModel, TextEncoder, create_model, list_variants, variant_config
from metaseg.models.image_encoders import lite0_package_weights_path, map_lite0_state_dict

TINY = dict(pretrained=False, caf_dim=32, caf_heads=2, embed_dim=16, decoder_dim=16, max_tokens=16,
            pos_grid=4, queue_size=4, text_cache_size=3)


@pytest.fixture(scope="module")
def text_encoder() -> TextEncoder:
    return TextEncoder("minilm", max_tokens=16, cache_size=3)


@pytest.fixture(scope="module")
def meta(text_encoder) -> SegModel:
    torch.manual_seed(0)
    return create_model("metasegnet_demo", text_encoder_module=text_encoder, **TINY)


@pytest.fixture(scope="module")
def base() -> SegModel:
    torch.manual_seed(0)
    return create_model("baseline_demo", **TINY)


def test_variants_listed():
    names = list_variants()
    for n in ("metasegnet_swin_b", "baseline_swin_b", "metasegnet_swin_t", "baseline_swin_t",
              "metasegnet_demo", "baseline_demo"):
        assert n in names
    cfg = variant_config("metasegnet_swin_b")
    assert cfg.encoder == "swin_base_patch4_window12_384" and cfg.image_size == 1024
    assert cfg.text_encoder == "bert-base-uncased" and cfg.text_fallback == "minilm"


def test_registry_errors_and_overrides():
    with pytest.raises(UnknownNameError, match="metasegnet_demo"):
        create_model("metasegnet_nope")
    with pytest.raises(ConfigError, match="bogus"):
        variant_config("metasegnet_demo", bogus=1)
    assert variant_config("baseline_demo", class_set="loveda").num_classes == 7
    assert variant_config("baseline_demo", num_classes=3).num_classes == 3
    assert variant_config("baseline_demo", pretrained=False).pretrained == "none"
    assert variant_config("baseline_demo", pretrained=True).pretrained == "package"
    with pytest.raises(ConfigError):
        variant_config("baseline_demo", pretrained="weird")


@pytest.mark.parametrize("shape", [(2, 97, 131), (1, 64, 64), (1, 33, 40)])
def test_output_shape_any_size(meta, base, shape):
    b, h, w = shape
    x = torch.rand(b, 3, h, w)
    meta.eval()
    with torch.no_grad():
        assert meta(x, "farmland near a river").logits.shape == (b, 8, h, w)
        assert base.eval()(x).logits.shape == (b, 8, h, w)


def test_swin_tiny_odd_size():
    torch.manual_seed(0)
    model = create_model("baseline_swin_t", pretrained=False, decoder_dim=16, caf_dim=32, caf_heads=2).eval()
    assert model.image_encoder.out_channels == [96, 192, 384, 768]
    with torch.no_grad():
        assert model(torch.rand(1, 3, 97, 131)).logits.shape == (1, 8, 97, 131)


def test_gradients_reach_decoder_and_encoder_not_text(meta):
    meta.train()
    meta.zero_grad()
    out = meta(torch.rand(2, 3, 64, 64), ["dense city blocks", "sandy desert"], negative_text=["snow", "rainforest"])
    assert out.itm_loss is not None and out.img_embed.shape == (2, 16)
    (out.logits.mean() + out.itm_loss).backward()
    assert meta.decoder.img_cross.attn.q.weight.grad.abs().sum() > 0
    assert meta.decoder.align.itm_head[0].weight.grad.abs().sum() > 0
    assert meta.image_encoder.body.conv_stem.weight.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in meta.text_encoder.parameters())
    meta.eval()


def test_text_encoder_frozen_and_eval_in_train_mode(meta, text_encoder):
    meta.train()
    assert meta.training and not text_encoder.training and not text_encoder.model.training
    meta.eval()
    toks = text_encoder.tokenize_words("tropical forest beside a river and buildings")
    assert "[UNK]" not in toks and "forest" in toks


def test_different_prompts_change_metasegnet_not_baseline(meta, base):
    x = torch.rand(1, 3, 64, 64)
    meta.eval()
    base.eval()
    with torch.no_grad():
        a = meta(x, "arid desert with bare sand").logits
        b = meta(x, "snowy tundra with ice").logits
        assert (a - b).abs().max() > 1e-5
        torch.testing.assert_close(base(x, "arid desert with bare sand").logits, base(x, "snow").logits)


def test_text_cache_hits_and_is_bounded(text_encoder, monkeypatch):
    text_encoder.clear_cache()
    calls = []
    orig = text_encoder._encode_uncached
    monkeypatch.setattr(text_encoder, "_encode_uncached", lambda t: calls.append(list(t)) or orig(t))
    f1 = text_encoder(["a", "b"])
    f2 = text_encoder(["b", "a"])
    assert calls == [["a", "b"]]
    torch.testing.assert_close(f1.tokens[0], f2.tokens[1])
    assert f1.ids[0] == f2.ids[1] and f1.ids[0] != f1.ids[1]
    text_encoder(["c", "d"])
    assert len(text_encoder._cache) == 3  # LRU bound
    assert f1.tokens.shape == (2, 16, 384) and f1.mask.dtype == torch.bool and not f1.tokens.requires_grad


def test_user_errors(meta):
    with pytest.raises(ConfigError, match="prompt"):
        meta(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="2 images"):
        meta(torch.rand(2, 3, 32, 32), ["a", "b", "c"])
    with pytest.raises(ValueError):
        meta(torch.rand(3, 32, 32), "a")


def test_lite0_package_weights_loaded_and_checked():
    model = create_model("baseline_demo", decoder_dim=16, caf_dim=32, caf_heads=2)
    src = torch.load(lite0_package_weights_path(), map_location="cpu", weights_only=True)
    torch.testing.assert_close(model.image_encoder.body.conv_stem.weight, src["_conv_stem.weight"])
    torch.testing.assert_close(model.image_encoder.body.bn1.running_mean, src["_bn0.running_mean"])
    target = dict(zip([f"k{i}" for i in range(len(src))], src.values(), strict=True))
    bad = dict(src)
    bad["_conv_stem.weight"] = torch.zeros(1, 2, 3, 3)
    with pytest.raises(CheckpointError, match="does not match"):
        map_lite0_state_dict(bad, target)
    with pytest.raises(CheckpointError, match="tensors"):
        map_lite0_state_dict(dict(list(src.items())[:-1]), target)


def test_device_policy():
    from metaseg.device import autocast, autocast_dtype, pick_device

    assert pick_device("cpu").type == "cpu"
    assert autocast_dtype("cpu") is None
    with autocast("cpu"):
        pass
    if not torch.cuda.is_available():
        assert pick_device().type == "cpu"
        with pytest.raises(ConfigError):
            pick_device("cuda")
    with pytest.raises(ConfigError):
        pick_device("tpu-7")


def test_features_cached_in_inference_mode_are_usable_for_training(meta, text_encoder):
    text_encoder.clear_cache()
    with torch.inference_mode():
        meta.eval()(torch.rand(1, 3, 64, 64), "prompt seen first during validation")
    meta.train()
    out = meta(torch.rand(1, 3, 64, 64), "prompt seen first during validation")
    (out.logits.mean() + out.itm_loss).backward()  # would fail on inference tensors
    meta.eval()


def test_model_normalises_and_pads_internally(base, monkeypatch):
    seen = {}
    orig = base.image_encoder.forward

    def spy(x):
        seen["x"] = x
        return orig(x)

    monkeypatch.setattr(base.image_encoder, "forward", spy)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    with torch.no_grad():
        base.eval()(mean.expand(1, 3, 40, 50).clone())
    assert seen["x"].shape == (1, 3, 64, 64)  # padded to a multiple of 32
    assert seen["x"].abs().max() < 1e-6  # ImageNet mean -> 0; padding is 0 too


def test_text_encoder_resolution_offline(monkeypatch, caplog):
    from metaseg.models.text_encoder import resolve_text_encoder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name, path = resolve_text_encoder("bert-base-uncased", "minilm")
    assert name == "minilm" and path.endswith("model")
    assert "bert-base-uncased" in caplog.text
    with pytest.raises(CheckpointError, match="bert-base-uncased"):
        resolve_text_encoder("bert-base-uncased", None)
    assert resolve_text_encoder(path)[0] == path  # a local folder is used as is
