"""Training loop on a tiny OpenEarthMap fixture: smoke, checkpoints, resume, negatives, DDP (slow)."""

from __future__ import annotations

import csv
import json
import os
import socket
from pathlib import Path

import pytest
import torch

from tests.fixtures.datasets import make_openearthmap
from training.config import load_config
from training.train import NegativeBank, load_optimizer, lr_at, save_optimizer, train

#: A small MetaSegNet: real Lite0 encoder and MiniLM text encoder, narrow decoder, short prompts.
TINY = {"max_tokens": 32, "caf_dim": 32, "caf_heads": 4, "embed_dim": 32, "decoder_dim": 16, "pos_grid": 4}


@pytest.fixture(scope="module")
def oem(tmp_path_factory):
    return make_openearthmap(tmp_path_factory.mktemp("oem") / "oem", n=12, size=32, seed=3)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from prompts_db import PromptStore

    return PromptStore(tmp_path_factory.mktemp("db") / "prompts.sqlite")


def _cfg(oem, out, *extra):
    return load_config(None, [
        "dataset=openearthmap", f"data_root={oem}", f"out_dir={out}", "image_size=32", "batch_size=2",
        "device=cpu", "amp=false", "progress=false", "threads=1", "num_workers=0", "seed=0",
        f"model_overrides={json.dumps(TINY)}", *extra,
    ])


def _rows(out: Path) -> list[dict]:
    with (out / "metrics.csv").open() as fh:
        return list(csv.DictReader(fh))


def test_metasegnet_trains_and_best_checkpoint_reproduces_val_miou(oem, store, tmp_path):
    from metaseg.checkpoints import load_checkpoint
    from training.datasets import build_dataset, collate_samples
    from training.train import validate

    out = tmp_path / "run"
    summary = train(_cfg(oem, out, "model=metasegnet_demo", "epochs=4", "lr=2e-3"), store=store)
    rows = _rows(out)
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4"] and summary["steps"] == 12
    assert float(rows[-1]["train_ce"]) < float(rows[0]["train_ce"])
    assert float(rows[-1]["train_dice"]) < float(rows[0]["train_dice"])
    assert all(float(r["train_itm"]) > 0 for r in rows)  # ITM loss is active
    assert all(r["val_miou"] for r in rows)
    assert any((out / "tb").iterdir())
    assert not [p for p in out.rglob("*") if p.suffix in (".pt", ".pth", ".pkl", ".bin")]

    meta = json.loads((out / "best.json").read_text())
    assert meta["dataset"] == "openearthmap" and meta["prompt_mode"] == "climate"
    assert abs(meta["best_miou"] - summary["best_miou"]) < 1e-9
    model, _ = load_checkpoint(out / "best.safetensors")
    val = build_dataset("openearthmap", oem, "val", image_size=32, store=store)
    again = validate(model, val, val.class_set, torch.device("cpu"), batch_size=2)
    assert abs(again["miou"] - meta["best_miou"]) < 1e-6

    # the reloaded best model gives the same logits as the same weights loaded into a fresh model
    last, _ = load_checkpoint(out / "last.safetensors")
    batch = collate_samples([val[0]])
    if meta["epoch"] == json.loads((out / "last.json").read_text())["epoch"]:
        with torch.no_grad():
            a = model(batch["image"], text=batch["prompt"]).logits
            b = last(batch["image"], text=batch["prompt"]).logits
        torch.testing.assert_close(a, b)


def test_baseline_resume_continues_epochs_steps_and_optimizer(oem, store, tmp_path):
    out = tmp_path / "run"
    first = train(_cfg(oem, out, "model=baseline_demo", "epochs=2"), store=store)
    assert first["steps"] == 6 and len(_rows(out)) == 2
    state = json.loads((out / "last_state.json").read_text())
    assert state["epoch"] == 1 and state["global_step"] == 6
    second = train(_cfg(oem, out, "model=baseline_demo", "epochs=3", "resume=true"), store=store)
    rows = _rows(out)
    assert [r["epoch"] for r in rows] == ["1", "2", "3"] and [r["step"] for r in rows] == ["3", "6", "9"]
    assert second["epochs_run"] == 1 and second["steps"] == 9
    from safetensors import safe_open

    with safe_open(str(out / "last_optim.safetensors"), framework="pt") as f:
        steps = {float(f.get_tensor(k)) for k in f.keys() if k.endswith(".step")}
    assert steps == {9.0}  # AdamW moments were restored, not restarted (would be 3)


def test_optimizer_state_round_trip_without_pickle(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=0.1)
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(5, 4)).sum().backward()
        opt.step()
    save_optimizer(opt, tmp_path / "o.safetensors")
    fresh = torch.optim.AdamW(net.parameters(), lr=1.0)
    load_optimizer(fresh, tmp_path / "o.safetensors")
    a, b = opt.state_dict(), fresh.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for pid in a["state"]:
        for k in a["state"][pid]:
            torch.testing.assert_close(a["state"][pid][k], b["state"][pid][k])


def test_lr_schedule_is_cosine_with_optional_warmup():
    cfg = load_config(None, ["lr=1e-3", "min_lr=1e-5"])
    assert lr_at(0, 100, cfg) == pytest.approx(1e-3)
    assert lr_at(50, 100, cfg) == pytest.approx((1e-3 + 1e-5) / 2)
    assert lr_at(100, 100, cfg) == pytest.approx(1e-5)
    warm = load_config(None, ["lr=1e-3", "warmup_steps=10"])
    assert lr_at(0, 100, warm) == pytest.approx(1e-4) and lr_at(10, 100, warm) == pytest.approx(1e-3)


def test_negative_bank_gives_other_zones_texts():
    bank = NegativeBank({"Cfa": "humid subtropical", "Cfb": "oceanic", "ET": "tundra"}, seed=0)
    for _ in range(20):
        neg = bank.sample(["humid subtropical", "oceanic", "generic"], ["Cfa", "Cfb", None])
        assert neg[0] in {"oceanic", "tundra"} and neg[1] in {"humid subtropical", "tundra"}
        assert neg[2] in bank.texts
    again = NegativeBank({"Cfa": "humid subtropical", "Cfb": "oceanic", "ET": "tundra"}, seed=0)
    first = NegativeBank({"Cfa": "humid subtropical", "Cfb": "oceanic", "ET": "tundra"}, seed=0)
    assert [again.sample(["oceanic"], ["Cfb"]) for _ in range(5)] == [first.sample(["oceanic"], ["Cfb"]) for _ in range(5)]
    assert NegativeBank({"Cfb": "oceanic"}).sample(["oceanic"], ["Cfb"]) is None


def test_single_zone_dataset_gets_different_negative_texts(store):
    bank = NegativeBank.from_store(store, "loveda")
    assert len(bank) == 30
    positive = store.current("Cfa", "loveda").text
    negs = bank.sample([positive] * 8, ["Cfa"] * 8)
    assert all(n != positive for n in negs) and len(set(negs)) > 1


# --------------------------------------------------------------------------- DDP (slow)
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, overrides: list[str], db: str, result_dir: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world),
                       "RANK": str(rank), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(world),
                       "METASEG_DB": db, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    summary = train(load_config(None, overrides))
    Path(result_dir, f"rank{rank}.json").write_text(json.dumps(summary))


@pytest.mark.slow
def test_ddp_two_cpu_processes_with_gloo(oem, store, tmp_path):
    import torch.multiprocessing as mp

    out = tmp_path / "run"
    cfg = _cfg(oem, out, "model=metasegnet_demo", "epochs=2")
    overrides = [f"{k}={json.dumps(v)}" for k, v in cfg.to_dict().items()]
    mp.spawn(_ddp_worker, args=(2, _free_port(), overrides, str(store.path) if hasattr(store, "path")
                                else os.environ["METASEG_DB"], str(tmp_path)), nprocs=2, join=True)
    s0 = json.loads((tmp_path / "rank0.json").read_text())
    s1 = json.loads((tmp_path / "rank1.json").read_text())
    assert s0["world_size"] == s1["world_size"] == 2
    # 6 train tiles, batch 2 per process, 2 processes -> 1 step per epoch
    assert s0["steps"] == s1["steps"] == 2
    assert s0["best_miou"] == pytest.approx(s1["best_miou"])  # confusion matrices were all-reduced
    rows = _rows(out)
    assert [r["epoch"] for r in rows] == ["1", "2"]  # written once, by rank 0
    assert (out / "best.safetensors").is_file()
    rule = json.loads((out / "best.json").read_text())["lr_rule"]  # the DDP lr rule is recorded
    assert rule == {"lr_scaling": "none", "global_batch": 4, "reference_batch": 2, "scale": 1.0,
                    "peak_lr": cfg.lr}


def test_unlabelled_validation_split_is_refused(store, tmp_path):
    from metaseg.errors import ConfigError
    from tests.fixtures.datasets import make_loveda

    root = make_loveda(tmp_path / "loveda", n=1, size=32)
    cfg = load_config(None, ["dataset=loveda", f"data_root={root}", f"out_dir={tmp_path / 'run'}",
                             "split_val=test", "image_size=32", "device=cpu", "progress=false"])
    with pytest.raises(ConfigError, match="no labels"):
        train(cfg, store=store)


def test_time_budget_stops_the_run_and_still_saves(oem, store, tmp_path):
    out = tmp_path / "run"
    summary = train(_cfg(oem, out, "model=baseline_demo", "epochs=5", "time_budget_minutes=0.0001"), store=store)
    assert summary["out_of_time"] and summary["steps"] == 1 and summary["last_epoch"] == 1
    rows = _rows(out)
    assert len(rows) == 1 and rows[0]["val_miou"]  # the interrupted epoch is validated and logged
    assert (out / "best.safetensors").is_file() and (out / "last_state.json").is_file()


# --------------------------------------------------------------------------- issue 23: seeds, writes, strict resume
def test_every_rank_draws_its_own_data_and_rank0_keeps_the_single_process_seed():
    from training.train import data_seed, loader_seed

    assert loader_seed(0, 3, 0) == 0 * 100003 + 3  # a 1-process run is unchanged
    seeds = {loader_seed(7, e, r) for e in range(50) for r in range(8)}
    assert len(seeds) == 400  # no two (epoch, rank) pairs share a generator seed
    assert data_seed(5, 0) == 5 and data_seed(5, 1) != data_seed(5, 0)
    flips = []
    for rank in (0, 1):
        g = torch.Generator().manual_seed(loader_seed(0, 0, rank))
        flips.append(torch.randperm(16, generator=g).tolist())
    assert flips[0] != flips[1]


def test_checkpoints_are_written_when_due_not_after_every_epoch(oem, store, tmp_path, monkeypatch):
    import metaseg.checkpoints as ck

    calls: list[str] = []
    real = ck.save_checkpoint
    monkeypatch.setattr(ck, "save_checkpoint", lambda m, p, **kw: (calls.append(Path(p).name), real(m, p, **kw))[1])
    out = tmp_path / "run"
    summary = train(_cfg(oem, out, "model=baseline_demo", "epochs=3", "checkpoint_every_minutes=60"), store=store)
    assert sorted(calls) == ["best", "last"]  # once, when the run ended (not 3 epochs x 2 files)
    assert len(_rows(out)) == 3 and summary["checkpoint_s"] >= 0
    assert json.loads((out / "last_state.json").read_text())["epoch"] == 2
    best = json.loads((out / "best.json").read_text())
    assert best["best_miou"] == pytest.approx(summary["best_miou"]) and best["units"] == "percent"
    assert 0 <= summary["best_miou"] <= 100 and summary["units"]["miou"] == "percent"
    assert summary["images_per_s"] and summary["images_per_s_with_loading"]
    assert summary["images_per_s_with_loading"] <= summary["images_per_s"] * 1.0001
    calls.clear()
    train(_cfg(oem, tmp_path / "every", "model=baseline_demo", "epochs=2", "checkpoint_every_minutes=0"), store=store)
    assert calls.count("last") == 2  # 0 = after every epoch


def test_resume_refuses_weights_of_another_model(oem, store, tmp_path):
    from metaseg.errors import CheckpointError

    out = tmp_path / "run"
    train(_cfg(oem, out, "model=baseline_demo", "epochs=1"), store=store)
    with pytest.raises(CheckpointError, match="do not match"):  # strict: a different head width
        train(load_config(None, [
            "dataset=openearthmap", f"data_root={oem}", f"out_dir={out}", "image_size=32", "batch_size=2",
            "device=cpu", "amp=false", "progress=false", "threads=1", "num_workers=0", "model=baseline_demo",
            "epochs=2", "resume=true", f"model_overrides={json.dumps(dict(TINY, decoder_dim=24))}"]), store=store)


def test_seeds_option_reports_mean_and_spread(oem, store, tmp_path):
    out = tmp_path / "seeds"
    summary = train(_cfg(oem, out, "model=baseline_demo", "epochs=1", "seeds=[0, 1]"), store=store)
    assert summary["seeds"] == [0, 1] and [r["seed"] for r in summary["runs"]] == [0, 1]
    b = summary["best_miou"]
    vals = [r["best_miou"] for r in summary["runs"]]
    assert b["n"] == 2 and b["mean"] == pytest.approx(sum(vals) / 2, abs=1e-3)
    assert b["spread"] == pytest.approx(max(vals) - min(vals), abs=1e-3) and b["std"] is not None
    assert (out / "seed_0" / "best.safetensors").is_file() and (out / "seed_1" / "best.safetensors").is_file()
    assert json.loads((out / "seeds.json").read_text())["best_miou"] == b
