"""``python -m metaseg bench`` and :mod:`metaseg.bench` on tiny configurations.

One tiny benchmark (32² inputs, 48²/64² sliding tiles, one repeat, one thread) runs through the
CLI once per module; the tests check the JSON contract, the arithmetic between the keys and
the text-cache speed-up. The padding cut of the CAF decoder (a speed-up found with the
benchmark) is checked for equal outputs.
"""

from __future__ import annotations

import contextlib
import io
import json
import math

import pytest
import torch

from metaseg.cli import main

REQUIRED = ("device", "size", "batch", "metasegnet_ms", "baseline_ms", "ratio", "text_encode_ms",
            "text_cached_ms", "tiles_per_s", "mpix_per_s", "peak_mem_mb", "sliding")
TINY = ["bench", "--size", "32", "--sizes-sliding", "48,64", "--repeats", "2", "--warmup", "1",
        "--threads", "1", "--json"]


@pytest.fixture(scope="module")
def tiny_result() -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(TINY))
    assert code == 0
    lines = out.getvalue().strip().splitlines()
    assert len(lines) == 1, "--json prints exactly one line"
    return json.loads(lines[0])


def test_json_has_contract_keys_with_sane_values(tiny_result):
    r = tiny_result
    for key in REQUIRED:
        assert key in r, key
    assert r["device"] == "cpu" and r["size"] == 32 and r["batch"] == 1
    for key in ("metasegnet_ms", "baseline_ms", "ratio", "text_encode_ms", "text_cached_ms",
                "tiles_per_s", "mpix_per_s", "peak_mem_mb"):
        assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] > 0, key
    assert 50 < r["peak_mem_mb"] < 64_000  # torch + two models are resident: tens of MiB at least
    assert r["pair"] == "demo" and r["models"] == ["metasegnet_demo", "baseline_demo"]
    assert r["threads"] == 1 and r["torch"] == torch.__version__ and r["cpu"]


def test_ratio_and_throughput_follow_from_the_latencies(tiny_result):
    r = tiny_result
    assert r["ratio"] == pytest.approx(r["metasegnet_ms"] / r["baseline_ms"], rel=1e-3)
    assert r["tiles_per_s"] == pytest.approx(1000.0 * r["batch"] / r["metasegnet_ms"], rel=1e-3)
    assert r["mpix_per_s"] == pytest.approx(r["tiles_per_s"] * 32 * 32 / 1e6, rel=1e-3)
    assert r["both_ms"] == pytest.approx(r["metasegnet_ms"] + r["baseline_ms"], rel=1e-3)


def test_sliding_times_per_requested_size(tiny_result):
    r = tiny_result
    assert set(r["sliding"]) == {"48", "64"}
    assert all(isinstance(v, float) and v > 0 for v in r["sliding"].values())
    # window 32, overlap 0.25 (stride 24): 48 -> 2×2 windows, 64 -> 3×3 windows
    assert r["sliding_windows"] == {"48": 4, "64": 9}
    assert r["sliding_ratio"] == pytest.approx(r["sliding"]["64"] / r["sliding"]["48"], rel=1e-2)
    assert r["sliding_area_ratio"] == pytest.approx((64 / 48) ** 2, rel=1e-3)
    assert set(r["sliding_peak_mem_mb"]) == {"48", "64"}


def test_text_cache_is_faster_than_cold_encoding(tiny_result):
    r = tiny_result
    assert r["text_cached_ms"] < r["text_encode_ms"]
    assert r["text_speedup"] > 1
    assert 2 < r["text_tokens"] <= 250


def test_flops_split_by_component(tiny_result):
    f = tiny_result["flops"]
    assert f["metasegnet"]["image_encoder"] == f["baseline"]["image_encoder"] > 0  # same encoder
    assert f["metasegnet"]["head"] == f["baseline"]["head"] > 0
    assert f["baseline"]["decoder"] == 0 < f["metasegnet"]["decoder"]
    assert f["metasegnet"]["total"] > f["baseline"]["total"]


def test_threads_option_does_not_leak(tiny_result):
    before = torch.get_num_threads()
    from metaseg.bench import BenchOptions, run_benchmark

    run_benchmark(BenchOptions(size=32, repeats=1, warmup=0, sliding_sizes=(), flops=False,
                               threads=1 if before != 1 else 2))
    assert torch.get_num_threads() == before


def test_human_table(tiny_result):
    from metaseg.bench import format_table

    text = format_table(tiny_result)
    assert "ratio MetaSegNet / baseline" in text and "sliding 64² (ms)" in text
    assert "[9 windows" in text


def test_cuda_missing_is_exit_2_one_line(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["bench", "--device", "cuda", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "CUDA" in err[0]


@pytest.mark.parametrize("args", [["--sizes-sliding", "20x40"], ["--sizes-sliding", "8"], ["--size", "8"],
                                  ["--peak-tflops", "-1"]])
def test_bad_options_are_exit_2(args, capsys):
    assert main(["bench", *args]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_cli_rejects_zero_batch():
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--batch", "0"])
    assert exc.value.code == 2


# ------------------------------------------------------------------ CAF decoder padding cut
def _decoder_and_text(lengths: list[int], max_tokens: int = 24):
    from metaseg.models.cafdecoder import CAFDecoder
    from metaseg.models.text_encoder import TextFeatures

    torch.manual_seed(0)
    dec = CAFDecoder(dim=32, text_dim=16, heads=4, mlp_ratio=2.0, joint_depth=2, pos_grid=4,
                     max_tokens=max_tokens, embed_dim=16, queue_size=4, temperature=0.07).eval()
    b = len(lengths)
    mask = torch.zeros(b, max_tokens, dtype=torch.bool)
    for i, n in enumerate(lengths):
        mask[i, :n] = True  # right padding, as the BERT tokenizer pads
    tokens = torch.randn(b, max_tokens, 16)
    tokens[~mask] = torch.randn(int((~mask).sum()), 16) * 50  # loud padding: must not leak
    return dec, TextFeatures(tokens, mask, torch.arange(b)), torch.randn(b, 32, 3, 5)


@pytest.mark.parametrize("lengths", [[7, 12, 3], [9, 9], [24]])
def test_padding_cut_keeps_decoder_outputs(monkeypatch, lengths):
    """Cutting the padding tail (and dropping an all-real mask) changes no output."""
    from metaseg.models import cafdecoder

    dec, text, img = _decoder_and_text(lengths)
    with torch.inference_mode():
        cut = dec(img, text)
        monkeypatch.setattr(cafdecoder, "trim_padding", lambda t: t)
        monkeypatch.setattr(cafdecoder, "_all_real", lambda m: False)
        full = dec(img, text)
    for a, b in zip(cut[:3], full[:3], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_trim_padding_shapes():
    from metaseg.models.cafdecoder import trim_padding
    from metaseg.models.text_encoder import TextFeatures

    _, text, _ = _decoder_and_text([7, 12, 3])
    cut = trim_padding(text)
    assert cut.tokens.shape == (3, 12, 16) and cut.mask.shape == (3, 12)
    assert torch.equal(cut.mask.sum(1), text.mask.sum(1)) and torch.equal(cut.ids, text.ids)
    full = TextFeatures(text.tokens, torch.ones_like(text.mask), text.ids)
    assert trim_padding(full) is full  # nothing to cut
    left = TextFeatures(text.tokens, text.mask.flip(1), text.ids)
    assert trim_padding(left) is left  # left padding: left alone
