"""metaseg.inference.Predictor: single pass, sliding windows with blending, memory bound, TTA, text cache."""

from __future__ import annotations

import tracemalloc
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from metaseg.errors import MetasegError
from metaseg.inference import BLEND_EPS, Predictor, blend_weight, window_starts

torch.manual_seed(0)


@dataclass
class FakeText:
    tokens: torch.Tensor

    def to(self, device):
        return FakeText(self.tokens.to(device))

    def __len__(self) -> int:
        return self.tokens.shape[0]


class StandIn(nn.Module):
    """Same interface as SegModel: uses_text, config, encode_text, forward(images, text=) -> .logits."""

    def __init__(self, k: int = 4, kernel: int = 1, uses_text: bool = False, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, k, kernel, padding=kernel // 2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) * 3)
            self.conv.bias.copy_(torch.randn(k, generator=g) * 0.3)
        self.uses_text = uses_text
        self.config = SimpleNamespace(name="standin", image_size=64, class_set="openearthmap")
        self.encode_calls = 0
        self.forward_batches: list[int] = []

    def encode_text(self, texts):
        self.encode_calls += 1
        return FakeText(torch.tensor([[float(len(t) % 7)] for t in texts]))

    def forward(self, images, text=None):
        self.forward_batches.append(images.shape[0])
        logits = self.conv(images)
        if text is not None:
            assert len(text) == images.shape[0]
            logits = logits + text.tokens.view(-1, 1, 1, 1) * torch.linspace(-1, 1, logits.shape[1]).view(1, -1, 1, 1)
        return SimpleNamespace(logits=logits)


def _full_pass(model: nn.Module, rgb: np.ndarray, prompt: str | None = None) -> torch.Tensor:
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        text = model.encode_text([prompt]) if prompt is not None else None
        return torch.softmax(model(x, text=text).logits, 1)[0]


def _rgb(h: int, w: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    img = np.kron(base, np.ones((8, 8, 1), dtype=np.uint8))[:h, :w]  # blocky, like fields
    noise = rng.integers(0, 30, size=(h, w, 3), dtype=np.uint8)
    return (img // 2 + noise).astype(np.uint8)


def test_window_starts_cover_and_end_flush():
    assert window_starts(100, 128, 96) == [0]
    # 1024 = 512 + 1.33 strides: 1 gap would leave no overlap, so 2 gaps (overlap 50 %).
    assert window_starts(1024, 512, 384) == [0, 256, 512]
    s = window_starts(1000, 128, 96)
    gaps = [b - a for a, b in zip(s, s[1:], strict=False)]
    assert s[0] == 0 and s[-1] == 1000 - 128
    assert all(g <= 96 + 32 / 4 + 1 for g in gaps)  # at least 3/4 of the requested overlap
    assert max(gaps) - min(gaps) <= 1  # evenly spaced


def test_window_count_linear_in_area():
    """Doubling the tile side doubles the windows per axis (512-px windows, overlap 0.25)."""
    n2 = len(window_starts(2048, 512, 384))
    n4 = len(window_starts(4096, 512, 384))
    assert (n2, n4) == (5, 10)
    for size in (600, 1500, 3000, 8000):
        s = window_starts(size, 512, 384)
        assert all(b - a <= 416 for a, b in zip(s, s[1:], strict=False))


def test_blend_weight_positive_and_peaked():
    w = blend_weight(64, 32)
    assert w.shape == (64, 32) and w.min() >= BLEND_EPS**2 * 0.99
    assert w[32, 16] == pytest.approx(1.0, abs=1e-2) and w[0, 0] < 0.01


def test_single_window_equals_full_pass():
    model = StandIn(kernel=3)
    rgb = _rgb(50, 60)
    pred = Predictor(model, "cpu").predict(rgb, window=64, return_probs=True)
    full = _full_pass(model, rgb)
    assert pred.windows == 1 and pred.index.dtype == np.uint8 and pred.index.shape == (50, 60)
    np.testing.assert_array_equal(pred.index, full.argmax(0).numpy())
    np.testing.assert_allclose(pred.probs.astype(np.float32), full.numpy(), atol=2e-3)
    fast = Predictor(model, "cpu").predict(rgb, window=64)
    np.testing.assert_array_equal(fast.index, pred.index)


def test_sliding_equals_full_pass_for_pointwise_model():
    model = StandIn(kernel=1)
    rgb = _rgb(150, 230)
    pred = Predictor(model, "cpu", batch_size=3).predict(rgb, window=64, overlap=0.25, return_probs=True)
    full = _full_pass(model, rgb)
    assert pred.windows > 6
    np.testing.assert_allclose(pred.probs.astype(np.float32), full.numpy(), atol=2e-3)
    np.testing.assert_array_equal(pred.index, full.argmax(0).numpy())


def test_sliding_matches_full_pass_for_conv_model():
    model = StandIn(kernel=5, seed=3)  # translation-equivariant up to its zero padding
    rgb = _rgb(140, 200, seed=5)
    pred = Predictor(model, "cpu").predict(rgb, window=64, overlap=0.25, return_probs=True)
    full = _full_pass(model, rgb)
    agree = (pred.index == full.argmax(0).numpy()).mean()
    assert pred.windows == 3 * 4
    assert agree > 0.995
    diff = np.abs(pred.probs.astype(np.float32) - full.numpy())[:, 2:-2, 2:-2]
    assert diff.mean() < 2e-3


def test_no_seams_on_constant_input():
    model = StandIn(kernel=5, seed=7)
    rgb = np.full((150, 170, 3), 120, dtype=np.uint8)
    pred = Predictor(model, "cpu").predict(rgb, window=48, overlap=0.25, return_probs=True)
    inner = pred.probs[:, 2:-2, 2:-2].astype(np.float32)
    assert pred.windows > 9
    # constant inside the tile: the blend hides the windows' zero-padded borders
    assert np.abs(inner - inner[:, :1, :1]).max() < 0.01
    assert len(np.unique(pred.index[2:-2, 2:-2])) == 1


def test_memory_stays_bounded_on_large_tile():
    k, h, w = 8, 900, 1500
    model = StandIn(k=k, kernel=1)
    rgb = _rgb(h, w)
    predictor = Predictor(model, "cpu", batch_size=8)
    tracemalloc.start()
    try:
        pred = predictor.predict(rgb, window=128, overlap=0.25)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    full_bytes = k * h * w * 4  # a full float32 H x W x K array
    assert pred.accumulator_bytes == (k + 1) * 128 * w * 4
    assert pred.accumulator_bytes < full_bytes / 5
    assert peak < full_bytes / 3, (peak, full_bytes)
    assert pred.probs is None and pred.index.shape == (h, w)
    # still correct (pointwise model): every pixel equals the full pass
    np.testing.assert_array_equal(pred.index[::7, ::7], _full_pass(model, rgb).argmax(0).numpy()[::7, ::7])


def test_tta_on_flip_equivariant_model_changes_nothing():
    model = StandIn(kernel=1)
    rgb = _rgb(100, 120)
    p = Predictor(model, "cpu", batch_size=4)
    a = p.predict(rgb, window=48, return_probs=True)
    b = p.predict(rgb, window=48, tta=True, return_probs=True)
    np.testing.assert_array_equal(a.index, b.index)
    np.testing.assert_allclose(a.probs.astype(np.float32), b.probs.astype(np.float32), atol=2e-3)
    assert b.tta and 3 * 4 in model.forward_batches  # flips run in the same batch


class Ramp(StandIn):
    """Not flip-equivariant: logits follow the x and y coordinate."""

    def forward(self, images, text=None):
        b, _, h, w = images.shape
        xx = torch.linspace(-2, 2, w).view(1, 1, 1, w).expand(b, 1, h, w)
        yy = torch.linspace(-1, 1, h).view(1, 1, h, 1).expand(b, 1, h, w)
        return SimpleNamespace(logits=torch.cat([xx, -xx, yy + images[:, :1]], 1))


def test_tta_averages_unflipped_views():
    model = Ramp()
    rgb = _rgb(40, 50)
    pred = Predictor(model, "cpu").predict(rgb, window=64, tta=True, return_probs=True)
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        sm = lambda t: torch.softmax(model(t).logits, 1)  # noqa: E731
        manual = (sm(x) + sm(x.flip(-1)).flip(-1) + sm(x.flip(-2)).flip(-2))[0] / 3
    np.testing.assert_allclose(pred.probs.astype(np.float32), manual.numpy(), atol=2e-3)
    plain = Predictor(model, "cpu").predict(rgb, window=64, return_probs=True)
    assert np.abs(plain.probs.astype(np.float32) - manual.numpy()).max() > 0.05


def test_default_batch_size_depends_on_device():
    assert Predictor(StandIn(), "cpu").batch_size == 1


def test_text_encoded_once_and_batched():
    model = StandIn(kernel=1, uses_text=True)
    rgb = _rgb(120, 130)
    p = Predictor(model, "cpu", batch_size=4)
    a = p.predict(rgb, "a temperate prompt", window=48)
    p.predict(rgb, "a temperate prompt", window=48, tta=True)
    assert model.encode_calls == 1
    assert a.prompt == "a temperate prompt" and a.windows == 12
    p.predict(rgb, "another prompt", window=48)
    assert model.encode_calls == 2
    full = _full_pass(model, rgb, "a temperate prompt")
    np.testing.assert_array_equal(a.index, full.argmax(0).numpy())
    with pytest.raises(MetasegError, match="prompt"):
        p.predict(rgb, None)


def test_baseline_ignores_prompt():
    model = StandIn(kernel=1)
    pred = Predictor(model, "cpu").predict(_rgb(30, 30), "ignored")
    assert pred.prompt is None and model.encode_calls == 0


def test_nodata_and_progress():
    model = StandIn(kernel=1)
    rgb = _rgb(100, 200)
    valid = np.ones((100, 200), bool)
    valid[:, :100] = False  # left half nodata: its windows are skipped
    calls = []
    pred = Predictor(model, "cpu", batch_size=2).predict(
        rgb, window=48, valid=valid, progress=lambda d, t: calls.append((d, t)), return_probs=True
    )
    assert (pred.index[:, :100] == 255).all() and (pred.index[:, 100:] < 4).all()
    assert (pred.probs[:, :, :100] == 0).all()
    assert calls[-1] == (pred.windows, pred.windows) and len(calls) == pred.windows
    assert [c[0] for c in calls] == list(range(1, pred.windows + 1))
    assert sum(model.forward_batches) < pred.windows  # all-nodata windows never ran


def test_bad_inputs():
    p = Predictor(StandIn(), "cpu")
    with pytest.raises(ValueError, match="uint8"):
        p.predict(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="RGB"):
        p.predict(np.zeros((8, 8, 5), np.uint8))
    with pytest.raises(ValueError, match="valid"):
        p.predict(np.zeros((8, 8, 3), np.uint8), valid=np.ones((4, 4), bool))


# --------------------------------------------------------------------------- real tiny models


@pytest.fixture(scope="module")
def demo_pair():
    from metaseg.models import create_model

    torch.manual_seed(0)
    small = dict(pretrained="none", caf_dim=32, caf_heads=2, decoder_dim=16, embed_dim=32)
    return create_model("metasegnet_demo", **small).eval(), create_model("baseline_demo", **small).eval()


def test_real_models_single_pass_and_sliding(demo_pair):
    metaseg_model, baseline = demo_pair
    rgb = _rgb(70, 90)
    prompt = "Aerial image of a temperate town with red roofs and green fields."
    calls = []
    orig = metaseg_model.encode_text
    metaseg_model.encode_text = lambda texts: (calls.append(list(texts)), orig(texts))[1]
    try:
        p = Predictor(metaseg_model, "cpu", batch_size=2)
        single = p.predict(rgb, prompt, window=128, return_probs=True)
        sliding = p.predict(rgb, prompt, window=48, tta=True)
        assert sliding.windows == 6 and sliding.index.shape == (70, 90) and sliding.index.max() < 8
        assert calls == [[prompt]]  # features computed once, reused by every window and call
    finally:
        metaseg_model.encode_text = orig
    full = _full_pass(metaseg_model, rgb, prompt)
    np.testing.assert_array_equal(single.index, full.argmax(0).numpy())
    base = Predictor(baseline, "cpu").predict(rgb, prompt, window=48)
    assert base.prompt is None and base.windows == 6


def test_from_name_without_shipped_weights_is_a_clear_error(monkeypatch, tmp_path):
    import metaseg.checkpoints as ck
    from metaseg.errors import CheckpointError

    monkeypatch.setattr(ck, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(CheckpointError, match="--checkpoint"):
        Predictor.from_name("metasegnet_demo", "cpu")


def test_from_checkpoint_round_trip(demo_pair, tmp_path):
    from metaseg.checkpoints import save_checkpoint

    _, baseline = demo_pair
    path = save_checkpoint(baseline, tmp_path / "baseline_demo")
    p = Predictor.from_checkpoint(path, "cpu", expected_name="baseline_demo")
    assert p.class_set.name == "openearthmap" and not p.uses_text
    rgb = _rgb(40, 40)
    np.testing.assert_array_equal(p.predict(rgb).index, Predictor(baseline, "cpu").predict(rgb).index)


# --------------------------------------------------------------------------- the batch entry
def test_predict_batch_is_the_single_pass_of_predict(demo_pair):
    """predict() on a one-window tile runs through predict_batch: the same indices, TTA or not."""
    metaseg_model, baseline = demo_pair
    rgb = _rgb(48, 64)
    prompt = "Aerial image of a temperate town."
    for model, text in ((metaseg_model, prompt), (baseline, None)):
        p = Predictor(model, "cpu")
        for tta in (False, True):
            batch = p.predict_batch(rgb[None], text, tta=tta)
            assert batch.dtype == torch.int64 and batch.shape == (1, 48, 64)
            np.testing.assert_array_equal(batch[0].numpy(), p.predict(rgb, text, tta=tta).index)


def test_predict_batch_takes_one_prompt_per_image_and_float_tensors(demo_pair):
    metaseg_model, _ = demo_pair
    p = Predictor(metaseg_model, "cpu", channels_last=False)
    rgbs = np.stack([_rgb(40, 40, seed=s) for s in (1, 2, 3)])
    prompts = ["Aerial image.", "Aerial image of a desert town.", "Aerial image."]
    x = torch.from_numpy(rgbs).permute(0, 3, 1, 2).float() / 255
    with torch.inference_mode():
        direct = metaseg_model(x, text=prompts).logits.argmax(1)  # the model's own per-image prompts
    for tta in (False, True):
        got = p.predict_batch(x, prompts, tta=tta)
        np.testing.assert_array_equal(got.numpy(), p.predict_batch(rgbs, prompts, tta=tta).numpy())
    np.testing.assert_array_equal(p.predict_batch(x, prompts).numpy(), direct.numpy())


def test_predict_batch_checks_its_inputs(demo_pair):
    metaseg_model, baseline = demo_pair
    p = Predictor(metaseg_model, "cpu")
    rgbs = np.stack([_rgb(32, 32)] * 2)
    with pytest.raises(MetasegError, match="needs a text prompt"):
        p.predict_batch(rgbs)
    with pytest.raises(ValueError, match="2 images but 3 prompts"):
        p.predict_batch(rgbs, ["a", "b", "c"])
    with pytest.raises(MetasegError, match="not valid Unicode"):
        p.predict_batch(rgbs, ["a", "b\udcff"])
    with pytest.raises(ValueError, match="uint8"):
        p.predict_batch(rgbs.astype(np.float32))
    base = Predictor(baseline, "cpu")
    np.testing.assert_array_equal(base.predict_batch(rgbs, ["x", "y"]).numpy(), base.predict_batch(rgbs).numpy())
