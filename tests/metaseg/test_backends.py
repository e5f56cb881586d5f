"""Predictor backends (metaseg.backends): ONNX export, verification, cache, int8, CLI flags.

One session-scoped pair of small demo-architecture checkpoints (random weights, small CAF and
head) is exported once per test session into a temporary folder; the tests then check that the
ONNX backends go through the same sliding-window / TTA / nodata / progress code as torch and
give the same classes, that the cache is keyed, atomic and rebuilt when corrupt, and the flags.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import metaseg.backends as B
import metaseg.backends.cache as B_cache
import metaseg.backends.int8 as B_int8
from metaseg.checkpoints import file_sha256
from metaseg.errors import ConfigError, MetasegError
from metaseg.inference import Predictor

SMALL = dict(pretrained="none", caf_dim=32, caf_heads=2, decoder_dim=16, embed_dim=32)
PROMPT = "Aerial image of a humid subtropical town with rice paddies and a river."


@pytest.fixture(scope="session")
def tiny_ckpts(tmp_path_factory):
    """``{name: weights path}`` of small metasegnet_demo/baseline_demo checkpoints with built graphs.

    The loaded models are kept in ``_MODELS`` (text encoder loaded once) for :func:`_pred`.
    """
    from metaseg.checkpoints import save_checkpoint
    from metaseg.models import create_model

    folder = tmp_path_factory.mktemp("ckpts")
    paths = {}
    for name in ("metasegnet_demo", "baseline_demo"):
        torch.manual_seed(0)
        paths[name] = save_checkpoint(create_model(name, **SMALL).eval(), folder / name)
    from metaseg.checkpoints import load_checkpoint

    for name, path in paths.items():
        _MODELS[name] = load_checkpoint(path)
        _pred(paths, name, "onnx")  # int8 graphs: built by the (slow) int8 tests
    return paths


_MODELS: dict = {}


def _pred(tiny_ckpts, name, backend="torch", **kwargs):
    """A predictor on the session's loaded model (no reload of the text encoder)."""
    model, meta = _MODELS[name]
    return Predictor(model, "cpu", meta=meta, backend=backend, checkpoint=tiny_ckpts[name], fold_bn=False, **kwargs)


def _rgb(h, w, seed=1):
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3))
    img = np.kron(low, np.ones((8, 8, 1)))[:h, :w] * 0.8 + rng.integers(0, 50, (h, w, 3))
    return img.astype(np.uint8)


def test_backend_names():
    assert B.check_backend(None) == "torch" and B.check_backend(" ONNX-int8 ") == "onnx-int8"
    with pytest.raises(ConfigError, match="unknown backend"):
        B.check_backend("tensorrt")
    assert B.parse_backends("onnx,onnx-int8") == ("torch", "onnx", "onnx-int8")
    with pytest.raises(ConfigError):
        B.parse_backends("auto")
    with pytest.raises(ConfigError):
        Predictor(torch.nn.Conv2d(3, 4, 1), "cpu", backend="openvino")


def test_calibration_set_is_documented_and_not_the_test_seed():
    tiles = B.calibration_tiles()
    names = [t.name for t in tiles]
    assert "iguacu_landsat8" in names and sum(n.startswith("calib_") for n in names) == 8
    assert B.CALIBRATION_SEED != 12345  # the held-out SynthEarth test seed
    assert all(t.rgb.dtype == np.uint8 and t.rgb.shape[2] == 3 for t in tiles)
    readme = (B.CALIBRATION_DIR / "README.md").read_text()
    assert str(B.CALIBRATION_SEED) in readme and "12345" in readme


def test_export_is_verified_on_real_tiles(tiny_ckpts):
    for name, path in tiny_ckpts.items():
        p = Predictor.from_checkpoint(path, "cpu", backend="onnx")
        rec = p.backend_record
        assert p.backend == "onnx" and rec["verified"]
        tiles = {row["tile"] for row in rec["verification"]["tiles"]}
        assert "iguacu_landsat8" in tiles and len(tiles) == 5  # the real tiles of static/examples
        assert rec["verification"]["agreement_min"] >= 0.999 and rec["verification"]["max_abs_diff"] < 1e-3
        graph = Path(p._ort.path)
        assert graph.parent == path.parent and graph.name.startswith(f"{name}.onnx.")
        assert rec["sha256"] == file_sha256(graph)


def test_fp32_graph_has_constant_padding_and_int8_keeps_sensitive_nodes(tiny_ckpts):
    import onnx

    p = _pred(tiny_ckpts, "baseline_demo", "onnx")
    nodes = onnx.load(p._ort.path).graph.node
    pads = [n.name for n in nodes if n.op_type == "Pad"]
    assert pads == ["/Pad"]  # only the pad to a multiple of 32; the 5 "same" pads live in their convs
    stride2 = [n for n in nodes if n.op_type == "Conv" and list(next(a.ints for a in n.attribute if a.name == "strides")) == [2, 2]]
    assert len(stride2) == 5 and all(any(a.name == "pads" for a in n.attribute) for n in stride2)

    excluded = set(B.int8_exclusions(p._ort.path))
    convs = [n for n in nodes if n.op_type == "Conv"]
    assert convs[0].name in excluded and convs[-1].name in excluded  # stem and classifier
    assert "/Resize" in excluded  # the logits' upsampling, after the classifier
    assert all(n.name in excluded for n in nodes if "/blocks.0/" in n.name and n.op_type in B.INT8_OPS)
    assert not any("/blocks.1/" in n for n in excluded)
    assert sum(n.op_type in B.INT8_OPS and n.name not in excluded for n in nodes) > 30


@pytest.mark.parametrize(("name", "backend"), [
    ("metasegnet_demo", "onnx"), ("baseline_demo", "onnx"),
    pytest.param("baseline_demo", "onnx-int8", marks=pytest.mark.slow),
    pytest.param("metasegnet_demo", "onnx-int8", marks=pytest.mark.slow),
])
def test_backends_share_sliding_tta_nodata_progress(tiny_ckpts, name, backend):
    ref = _pred(tiny_ckpts, name, batch_size=2)
    old, calib = dict(B.MIN_AGREEMENT), B_int8.calibration_tiles
    B.MIN_AGREEMENT["onnx-int8"] = 0.5  # random weights: int8 is checked for plumbing, not accuracy
    B_int8.calibration_tiles = lambda: calib()[:3]  # the full set is checked in test_calibration_set
    try:
        other = _pred(tiny_ckpts, name, backend, batch_size=2)
        if backend == "onnx-int8":
            assert other.backend_record["quantization"]["excluded"] and other.backend_record["calibration_seed"] == 4242
    finally:
        B.MIN_AGREEMENT.update(old)
        B_int8.calibration_tiles = calib
    rgb = _rgb(70, 90)
    valid = np.ones((70, 90), bool)
    valid[:, :20] = False
    runs = {}
    for key, p in (("torch", ref), (backend, other)):
        calls = []
        runs[key] = p.predict(rgb, PROMPT, window=48, tta=True, valid=valid, return_probs=True,
                              progress=lambda d, t, calls=calls: calls.append((d, t)))
        runs[key].extra["calls"] = calls
    a, b = runs["torch"], runs[backend]
    assert b.backend == backend and a.backend == "torch"
    assert b.windows == a.windows == 6 and b.extra["calls"] == a.extra["calls"]
    assert (b.index[~valid] == 255).all() and (b.probs[:, ~valid] == 0).all()
    agree = float((a.index[valid] == b.index[valid]).mean())
    if backend == "onnx":
        assert agree >= 0.999
        np.testing.assert_allclose(a.probs.astype(np.float32), b.probs.astype(np.float32), atol=2e-3)
    else:
        assert agree >= 0.5 and b.index[valid].max() < 8
    single = other.predict(rgb[:40, :40], PROMPT)  # single pass, fast argmax path
    assert single.windows == 1 and single.backend == backend


def test_truncated_graph_is_rebuilt(tiny_ckpts):
    path = tiny_ckpts["baseline_demo"]
    p = Predictor.from_checkpoint(path, "cpu", backend="onnx")
    graph = Path(p._ort.path)
    size = graph.stat().st_size
    with open(graph, "r+b") as fh:
        fh.truncate(size // 3)
    assert B.read_record(graph) is None  # hash mismatch: stale/corrupt
    q = Predictor.from_checkpoint(path, "cpu", backend="onnx")
    assert q.backend == "onnx" and Path(q._ort.path) == graph and graph.stat().st_size == size
    assert B.read_record(graph)["verified"]
    leftovers = [f.name for f in graph.parent.iterdir() if f.name.endswith(".tmp")]
    assert leftovers == []  # written to a temporary name and os.replace-d
    rgb = _rgb(40, 40)
    np.testing.assert_array_equal(q.predict(rgb).index, _pred(tiny_ckpts, "baseline_demo").predict(rgb).index)


def test_cache_key_follows_checkpoint_and_runtime(tiny_ckpts, tmp_path, monkeypatch):
    import onnxruntime as ort

    from metaseg.checkpoints import load_checkpoint, save_checkpoint

    model, _ = load_checkpoint(tiny_ckpts["baseline_demo"])
    first = B.graph_path(model, "onnx", tiny_ckpts["baseline_demo"])
    assert f"ort{ort.__version__}" in first.name
    with torch.no_grad():
        model.head.classifier.bias.add_(1.0)
    changed = save_checkpoint(model, tmp_path / "baseline_demo")
    second = B.graph_path(model, "onnx", changed)
    assert second.parent == tmp_path and second.name.split(".")[2] != first.name.split(".")[2]
    monkeypatch.setattr(ort, "__version__", "0.0.0")
    assert "ort0.0.0" in B.graph_path(model, "onnx", changed).name


def test_unwritable_checkpoint_dir_falls_back_to_user_cache(tiny_ckpts, tmp_path, monkeypatch):
    from metaseg.checkpoints import load_checkpoint

    ck = tiny_ckpts["baseline_demo"]
    monkeypatch.setenv("METASEG_CACHE_DIR", str(tmp_path / "user"))
    real = B_cache._writable
    monkeypatch.setattr(B_cache, "_writable", lambda folder: folder != ck.parent and real(folder))
    model, _ = load_checkpoint(ck)
    assert B.graph_path(model, "onnx", ck).parent == tmp_path / "user" / "onnx"


def test_graphs_of_the_shipped_weights_go_to_the_user_cache(tmp_path, monkeypatch):
    """The package's weights folder stays as shipped (and tests write only under tmp dirs)."""
    from metaseg.checkpoints import WEIGHTS_DIR, demo_checkpoint_path, load_checkpoint

    ck = demo_checkpoint_path("baseline_demo")
    assert ck.parent == WEIGHTS_DIR
    monkeypatch.setenv("METASEG_CACHE_DIR", str(tmp_path / "user"))
    model, _ = load_checkpoint(ck)
    assert B.graph_path(model, "onnx", ck).parent == tmp_path / "user" / "onnx"


def test_auto_picks_onnx_on_cpu_and_falls_back(tiny_ckpts, monkeypatch):
    p = Predictor.from_checkpoint(tiny_ckpts["baseline_demo"], "cpu", backend="auto")
    assert p.backend == "onnx" and p.backend_requested == "auto"

    def broken(*a, **k):
        raise MetasegError("export failed (test)")

    monkeypatch.setattr(B, "load_session", broken)
    q = Predictor.from_checkpoint(tiny_ckpts["baseline_demo"], "cpu", backend="auto")
    assert q.backend == "torch" and "export failed" in q.backend_note
    with pytest.raises(MetasegError, match="export failed"):
        Predictor.from_checkpoint(tiny_ckpts["baseline_demo"], "cpu", backend="onnx")


def test_unverified_graph_is_refused(tiny_ckpts):
    from metaseg.checkpoints import load_checkpoint

    ck = tiny_ckpts["baseline_demo"]
    model, _ = load_checkpoint(ck)
    graph, _ = B.ensure_graph(model, "onnx", ck)
    rec_path = graph.with_name(graph.name + ".json")
    saved = rec_path.read_text()
    rec = json.loads(saved)
    rec["verified"] = False  # what a graph that disagreed with torch on the example tiles records
    rec_path.write_text(json.dumps(rec))
    try:
        with pytest.raises(MetasegError, match="disagrees with PyTorch"):
            Predictor.from_checkpoint(ck, "cpu", backend="onnx")
        assert Predictor.from_checkpoint(ck, "cpu", backend="auto").backend == "torch"
    finally:
        rec_path.write_text(saved)


def test_evaluate_model_adapter_matches_predictor(tiny_ckpts):
    p = _pred(tiny_ckpts, "metasegnet_demo", "onnx")
    m = p.as_model()
    images = torch.from_numpy(np.stack([_rgb(64, 64, 1), _rgb(64, 64, 2)])).permute(0, 3, 1, 2).float() / 255
    with torch.inference_mode():
        out = m(images, text=[PROMPT, "another prompt"]).logits
    assert out.shape == (2, 8, 64, 64) and m.backend == "onnx"
    ref = _MODELS["metasegnet_demo"][0]
    with torch.inference_mode():
        exp = ref(images, text=[PROMPT, "another prompt"]).logits
    assert float((out.argmax(1) == exp.argmax(1)).float().mean()) >= 0.999


def test_predict_cli_backend_flag(tiny_ckpts, tmp_path, capsys):
    from metaseg.cli import main

    tile = Path(B.EXAMPLES_DIR) / "synth" / "synth_cfa.tif"
    args = ["predict", str(tile), "--model", "baseline_demo", "--checkpoint", str(tiny_ckpts["baseline_demo"]),
            "--device", "cpu", "--out", str(tmp_path / "m.png"), "--json"]
    assert main([*args, "--backend", "onnx"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["backend"] == "onnx"
    with pytest.raises(SystemExit) as exc:
        main([*args, "--backend", "tflite"])
    assert exc.value.code == 2


def test_bench_backends_json(tiny_ckpts, monkeypatch):
    import metaseg.checkpoints as ck
    from metaseg.cli import main

    monkeypatch.setattr(ck, "WEIGHTS_DIR", Path(tiny_ckpts["baseline_demo"]).parent)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["bench", "--size", "32", "--sizes-sliding", "none", "--repeats", "1", "--warmup", "0",
                     "--threads", "1", "--no-flops", "--backend", "torch,onnx", "--json"])
    assert code == 0
    result = json.loads(out.getvalue().strip().splitlines()[-1])
    assert set(result["backends"]) == {"torch", "onnx"}
    assert set(result["backends"]["onnx"]) == {"metasegnet_ms", "baseline_ms"}
    assert result["agreement"]["torch"] == {"metasegnet": 1.0, "baseline": 1.0}
    assert result["agreement"]["onnx"]["metasegnet"] >= 0.995 and result["agreement"]["onnx"]["baseline"] >= 0.995
    assert len(result["agreement_tiles"]) == 5


def test_bench_rejects_bad_backend(capsys):
    from metaseg.cli import main

    assert main(["bench", "--backend", "onnx,auto", "--json"]) == 2
    assert main(["bench", "--backend", "nope"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 2


def test_app_reads_metaseg_backend(monkeypatch):
    from studio import models

    seen = {}

    def fake_from_name(name, device=None, **kwargs):
        seen[name] = kwargs.get("backend")
        return Predictor(torch.nn.Conv2d(3, 8, 1), "cpu")

    monkeypatch.setattr(Predictor, "from_name", staticmethod(fake_from_name))
    monkeypatch.delenv("METASEG_BACKEND", raising=False)
    assert models.backend_from_env() == "auto"  # default: onnx on CPU when it can be had
    monkeypatch.setenv("METASEG_BACKEND", "onnx-int8")
    cache = models.ModelCache()
    cache.get("baseline")
    assert seen == {"baseline_demo": "onnx-int8"}
    monkeypatch.setenv("METASEG_BACKEND", "bogus")
    assert models.backend_from_env() == "auto"


def test_bn_folding_keeps_outputs():
    from metaseg.backends import fold_batchnorm
    from metaseg.models import create_model

    torch.manual_seed(0)
    model = create_model("baseline_demo", **SMALL).eval()
    for m in model.modules():  # non-trivial statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.rand(1, 3, 64, 96)
    with torch.inference_mode():
        ref = model(x).logits
    n = fold_batchnorm(model)
    assert n > 40 and not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.image_encoder.modules())
    with torch.inference_mode():
        torch.testing.assert_close(model(x).logits, ref, atol=1e-4, rtol=1e-4)
    assert fold_batchnorm(model) == 0  # idempotent
    mine = create_model("baseline_demo", **SMALL).eval()
    assert Predictor(mine, "cpu").bn_folded == 0  # a caller's model is never changed by default
    assert Predictor(mine, "cpu", fold_bn=True).bn_folded > 40


def test_missing_runtime_is_one_line_error_or_torch_for_auto(tiny_ckpts, monkeypatch):
    def no_ort(*a, **k):
        raise ImportError("No module named 'onnxruntime'")

    monkeypatch.setattr(B, "load_session", no_ort)
    with pytest.raises(MetasegError, match="onnxruntime"):
        _pred(tiny_ckpts, "baseline_demo", "onnx")
    assert _pred(tiny_ckpts, "baseline_demo", "auto").backend == "torch"


def test_int8_weight_bits_follow_vnni_and_name_the_graph(tiny_ckpts, tmp_path, monkeypatch):
    import platform

    monkeypatch.delenv("METASEG_INT8_WEIGHT_BITS", raising=False)
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    info = tmp_path / "cpuinfo"
    monkeypatch.setattr(B_int8, "CPUINFO", info)
    info.write_text("flags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw\n")
    assert B.int8_weight_bits() == 7  # AVX2 / AVX-512 without VNNI: 7-bit weights (no saturation)
    info.write_text("flags\t\t: fpu avx2 avx512f avx512_vnni\n")
    assert B.int8_weight_bits() == 8
    info.write_text("flags\t\t: fpu avx2 avx_vnni\n")
    assert B.int8_weight_bits() == 8
    info.unlink()
    assert B.int8_weight_bits() == 7  # unknown x86: safe choice
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert B.int8_weight_bits() == 8
    monkeypatch.setenv("METASEG_INT8_WEIGHT_BITS", "7")
    assert B.int8_weight_bits() == 7
    model, _ = _MODELS["baseline_demo"]
    assert ".onnx-int8-w7." in B.graph_path(model, "onnx-int8", tiny_ckpts["baseline_demo"]).name
    monkeypatch.setenv("METASEG_INT8_WEIGHT_BITS", "8")
    assert ".onnx-int8-w8." in B.graph_path(model, "onnx-int8", tiny_ckpts["baseline_demo"]).name
    assert ".onnx." in B.graph_path(model, "onnx", tiny_ckpts["baseline_demo"]).name
