"""``training.finetune``: teaching a checkpoint on sparse labels (SynthEarth tiles, offline, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.datasets import _write_tif

NANJING = (32.06, 118.80)  # Köppen Cfa


def _synth_pair(folder: Path, size: int = 96, seed: int = 0, sparse: float = 0.05, nodata_value: int = 255,
                index: int = 0) -> tuple[Path, Path, np.ndarray]:
    """A SynthEarth tile (georeferenced GeoTIFF in a Cfa location) and a sparse OpenEarthMap label."""
    from training.synth import generate_tile

    tile = generate_tile("Cfa", size=size, seed=seed, index=index)
    rng = np.random.default_rng(seed + 1)
    keep = rng.random(tile.label.shape) < sparse
    raw = np.where(keep, tile.label, nodata_value).astype(np.uint8)
    image = folder / f"tile{index}.tif"
    label = folder / f"label{index}_{nodata_value}.png"
    _write_tif(image, tile.image, NANJING)
    from PIL import Image

    Image.fromarray(raw).save(label)
    return image, label, raw


@pytest.fixture
def pair(tmp_path):
    return _synth_pair(tmp_path)


# ----------------------------------------------------------------------------- the loss
def test_loss_ignores_unlabelled_pixels_and_gives_them_no_gradient():
    import torch

    from training.finetune import labelled_loss

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 16, 16, generator=g)
    target = torch.full((2, 16, 16), 255, dtype=torch.long)
    target[0, 2:6, 3:9] = 1
    target[1, 10:12, 0:4] = 4
    base = logits.clone().requires_grad_(True)
    loss_a = labelled_loss(base, target)
    loss_a.backward()
    other = logits.clone()
    unlabelled = (target == 255).unsqueeze(1).expand_as(other)
    other[unlabelled] = torch.randn(int(unlabelled.sum()), generator=g) * 10  # change every unlabelled logit
    other.requires_grad_(True)
    loss_b = labelled_loss(other, target)
    loss_b.backward()
    assert torch.equal(loss_a.detach(), loss_b.detach())
    assert float(base.grad[unlabelled].abs().max()) == 0.0
    assert float(base.grad[~unlabelled].abs().sum()) > 0.0
    assert torch.equal(base.grad, other.grad)


def test_unlabelled_pixels_change_nothing_in_a_run(tmp_path):
    """Unlabelled as 0 (official no-data) or as 255 (project label files): identical taught weights."""
    from safetensors.numpy import load_file

    from training.finetune import finetune

    image, label255, raw = _synth_pair(tmp_path, nodata_value=255)
    label0 = tmp_path / "label_zero.png"
    from PIL import Image

    Image.fromarray(np.where(raw == 255, 0, raw).astype(np.uint8)).save(label0)
    outs = []
    for i, lbl in enumerate((label255, label0)):
        res = finetune("baseline_demo", [(image, lbl)], out=tmp_path / f"out{i}", class_set="openearthmap",
                       budget_s=None, steps=3, seed=7)
        assert res["steps"] == 3 and res["labelled_pixels"] == int((raw != 255).sum())
        outs.append(load_file(str(tmp_path / f"out{i}" / "model.safetensors")))
    assert outs[0].keys() == outs[1].keys()
    for k in outs[0]:
        np.testing.assert_array_equal(outs[0][k], outs[1][k], err_msg=k)
    base = load_file(str(Path(__file__).resolve().parents[2] / "metaseg" / "weights" / "baseline_demo.safetensors"))
    assert any(not np.allclose(outs[0][k], base[k].astype(np.float32)) for k in outs[0] if k.startswith("head."))


# ----------------------------------------------------------------------------- round trip
def test_taught_folder_round_trips_through_checkpoint_dir(tmp_path, capsys):
    """A text model taught on a new class set: the folder loads in predict/export with its class set."""
    from metaseg.cli import main as metaseg_main
    from metaseg.inference import Predictor
    from training.finetune import main

    tile = tmp_path / "t"
    tile.mkdir()
    image, label, raw = _synth_pair(tile, size=64)
    loveda = tmp_path / "label_loveda.png"  # OEM raw → a LoveDA-coded label (0 = unlabelled)
    oem_to_lov = np.array([0, 5, 1, 1, 3, 6, 4, 7, 2] + [0] * 247, dtype=np.uint8)
    from PIL import Image

    Image.fromarray(oem_to_lov[raw]).save(loveda)
    out = tmp_path / "taught"
    rc = main(["--model", "metasegnet_demo", "--pair", str(image), str(loveda), "--class-set", "loveda",
               "--steps", "2", "--out", str(out), "--json", "--no-progress"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res) >= {"checkpoint", "base", "class_set", "steps", "seconds", "labelled_pixels", "tiles"}
    assert res["class_set"] == "loveda" and res["steps"] == 2 and res["tiles"] == 1 and res["base"] == "metasegnet_demo"
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    meta = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert meta["class_set"] == "loveda" and meta["num_classes"] == 7
    assert meta["teach"]["base_sha256"] and meta["teach"]["steps"] == 2
    assert "Cfa" in meta["train_prompts"]  # the tile's own zone, from its georeference
    card = (out / "README.md").read_text(encoding="utf-8")
    assert meta["teach"]["base_sha256"] in card and "label_loveda.png" in card

    rc = metaseg_main(["predict", str(image), "--model", "metasegnet_demo", "--checkpoint", str(out),
                       "--out", str(tmp_path / "mask.png"), "--json"])
    assert rc == 0
    pred = json.loads(capsys.readouterr().out)
    assert pred["class_set"] == "loveda" and pred["zone"] == "Cfa"
    assert pred["prompt"] == meta["train_prompts"]["Cfa"]
    assert Predictor.from_checkpoint(out).class_set.name == "loveda"

    from training.export import main as export_main

    assert export_main(["--checkpoint", str(out), "--out", str(tmp_path / "exported"), "--json"]) == 0
    capsys.readouterr()
    assert meta["teach"]["base_sha256"] in (tmp_path / "exported" / "README.md").read_text(encoding="utf-8")


# ----------------------------------------------------------------------------- budget
def test_budget_is_kept(pair, tmp_path):
    from training.finetune import Recipe, finetune

    image, label, _ = pair
    budget = 15.0
    res = finetune("baseline_demo", [(image, label)], out=tmp_path / "b", budget_s=budget,
                   recipe=Recipe(patience=0))
    assert res["stopped"] == "budget"
    assert res["steps"] >= 1
    before_training = res["timing"]["load_s"] + res["timing"]["cache_s"]
    if before_training < budget - 2.0:  # on a machine so loaded that loading alone eats the budget, one step still runs
        assert res["seconds"] <= budget + 1.0
        assert res["seconds"] >= budget * 0.75
        assert res["steps"] >= 2


def test_progress_and_cancel(pair, tmp_path):
    import threading

    from training.finetune import TeachCancelled, finetune

    image, label, _ = pair
    cancel = threading.Event()
    seen = []

    def progress(frac, msg):
        seen.append(frac)
        if msg.startswith("step 2"):
            cancel.set()

    with pytest.raises(TeachCancelled):
        finetune("baseline_demo", [(image, label)], out=tmp_path / "c", budget_s=None, steps=50,
                 progress=progress, cancel=cancel)
    assert not (tmp_path / "c").exists()
    assert seen and all(0.0 <= f <= 1.0 for f in seen)


# ----------------------------------------------------------------------------- bad input
def _cli(argv, capsys):
    from training.finetune import main

    rc = main(argv + ["--no-progress"])
    err = capsys.readouterr().err
    return rc, err


@pytest.mark.parametrize("case", ["size", "empty", "value", "cap", "steps", "missing", "colour"])
def test_bad_input_is_one_line_and_exit_2(case, tmp_path, capsys, monkeypatch):
    from PIL import Image

    image, label, raw = _synth_pair(tmp_path, size=64)
    args = ["--model", "baseline_demo", "--pair", str(image), str(label), "--out", str(tmp_path / "o")]
    expect = {"size": "pixels but its tile is", "empty": "no labelled pixel", "value": "not a class of",
              "cap": "over the cap", "steps": "--steps", "missing": "not found", "colour": "class colour"}[case]
    if case == "size":
        Image.fromarray(raw[:32]).save(label)
    elif case == "empty":
        Image.fromarray(np.full_like(raw, 255)).save(label)
    elif case == "value":
        bad = raw.copy()
        bad[0, 0] = 42
        Image.fromarray(bad).save(label)
    elif case == "cap":
        monkeypatch.setenv("METASEG_TEACH_MAX_BUDGET_S", "60")
        args += ["--budget-s", "100"]
    elif case == "steps":
        args += ["--steps", "0"]
    elif case == "missing":
        args[4] = str(tmp_path / "nope.png")
    elif case == "colour":
        args[4] = str(image)  # the photo itself passed as its label
    rc, err = _cli(args, capsys)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], err
    assert "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_store_labels_finds_tiles_by_hash(tmp_path, capsys):
    """--store-labels: the newest saved label per tile, its tile found by sha256 in --root."""
    from metaseg.geo import tile_hash
    from prompts_db.store import PromptStore
    from training.finetune import main

    tiles = tmp_path / "tiles"
    tiles.mkdir()
    image, label, raw = _synth_pair(tiles, size=64)
    labels = tmp_path / "labels"
    labels.mkdir()
    moved = labels / "label_openearthmap_1.png"
    label.rename(moved)
    with PromptStore() as store:
        store.save_label(tile_hash(image), "openearthmap", str(moved))
    rc = main(["--model", "baseline_demo", "--store-labels", "--root", str(tiles), "--steps", "1",
               "--out", str(tmp_path / "o"), "--json", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    res = json.loads(capsys.readouterr().out)
    assert res["tiles"] == 1 and res["class_set"] == "openearthmap"
    assert res["labelled_pixels"] == int((raw != 255).sum())
