"""training.evaluate: end-to-end on a tiny SynthEarth set, exact metrics with stub models,
TTA un-flipping, prompt modes, zero-shot class maps, and user errors (exit 2, one line)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from training import class_map, evaluate, synth

REPO = Path(__file__).resolve().parents[2]
KEYS = {"miou", "oa", "mf1", "precision", "recall", "per_class", "dataset", "split", "prompt_mode", "n_images",
        "model"}  # fmt: skip


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("se")
    synth.write_synthearth(root, n=4, size=64, seed=9, zones="Cfa,BWh", split_fractions="0,0,1")
    return root


@pytest.fixture(scope="module")
def loveda_root(tmp_path_factory) -> Path:
    from PIL import Image

    root = tmp_path_factory.mktemp("loveda")
    rng = np.random.default_rng(0)
    for scene, n in (("Urban", 1), ("Rural", 2)):
        for sub in ("images_png", "masks_png"):
            (root / "Val" / scene / sub).mkdir(parents=True)
        img = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
        mask = rng.integers(0, 8, (32, 32), dtype=np.uint8)  # raw 0 = no-data
        Image.fromarray(img).save(root / "Val" / scene / "images_png" / f"{n}.png")
        Image.fromarray(mask).save(root / "Val" / scene / "masks_png" / f"{n}.png")
    return root


def _run(capsys, argv: list[str]) -> tuple[int, str, str]:
    rc = evaluate.main(argv + ["--no-progress"])
    out, err = capsys.readouterr()
    return rc, out, err


# ----------------------------------------------------------------------------- stub models


@dataclass
class _Cfg:
    name: str
    class_set: str = "openearthmap"


class StubModel(torch.nn.Module):
    """Predicts a fixed class everywhere, or (``mode="color"``) the brightest RGB channel per pixel."""

    def __init__(self, uses_text: bool = False, const: int = 0, mode: str = "const", k: int = 8) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.uses_text, self.const, self.mode, self.k = uses_text, const, mode, k
        self.config = _Cfg("stub_text" if uses_text else "stub")
        self.prompts: list[str] = []
        self.batch_sizes: list[int] = []

    def forward(self, images, text=None):
        b, _, h, w = images.shape
        self.batch_sizes.append(b)
        if self.uses_text:
            assert text is not None and len(text) == b
            self.prompts += list(text)
        logits = torch.zeros(b, self.k, h, w)
        if self.mode == "color":
            logits[:, :3] = images * 10
        else:
            logits[:, self.const] = 1.0
        return logits


def _patch(monkeypatch, model, class_set="openearthmap"):
    monkeypatch.setattr(
        evaluate, "load_model", lambda ckpt, name, dev: (model, {"class_set": class_set}, "stub")
    )


def _labels(root: Path, name: str, split: str) -> np.ndarray:
    from training.datasets import build_dataset

    ds = build_dataset(name, root, split, prompt_mode="none")
    return np.stack([ds[i]["label"].numpy() for i in range(len(ds))])


# ----------------------------------------------------------------------------- exact metrics


def test_constant_prediction_gives_hand_computable_metrics(monkeypatch, capsys, synth_root):
    gt = _labels(synth_root, "synthearth", "test")
    counts = np.bincount(gt[gt != 255].ravel(), minlength=8)
    c = int(np.argmax(counts))
    _patch(monkeypatch, StubModel(const=c))
    rc, out, err = _run(capsys, ["--model", "x", "--dataset", "synthearth", "--root", str(synth_root),
                                 "--split", "test", "--json"])  # fmt: skip
    assert rc == 0, err
    rep = json.loads(out)
    assert KEYS <= set(rep)
    assert rep["n_images"] == 4 and rep["dataset"] == "synthearth" and rep["prompt_mode"] == "climate"
    total = counts.sum()
    assert rep["oa"] == pytest.approx(100 * counts[c] / total, abs=0.01)
    names = (
        "bareland",
        "rangeland",
        "developed space",
        "road",
        "tree",
        "water",
        "agriculture land",
        "building",
    )
    assert set(rep["per_class"]) == set(names)
    assert rep["per_class"][names[c]]["iou"] == pytest.approx(100 * counts[c] / total, abs=0.01)
    assert rep["per_class"][names[c]]["recall"] == 100.0
    present = [i for i in range(8) if counts[i] > 0]
    for i in range(8):
        v = rep["per_class"][names[i]]
        if i == c:
            continue
        assert v["iou"] == (0.0 if i in present else None)  # absent from GT and prediction → null
    assert rep["miou"] == pytest.approx(100 * counts[c] / total / len(present), abs=0.01)
    assert "note" not in rep  # OEM scores every class


def test_tta_unflips_correctly(monkeypatch, capsys, synth_root):
    """A per-pixel (flip-equivariant) model must give identical results with and without TTA."""
    argv = ["--model", "x", "--dataset", "synthearth", "--root", str(synth_root), "--split", "test", "--json",
            "--batch-size", "3"]  # fmt: skip
    plain_model, tta_model = StubModel(mode="color"), StubModel(mode="color")
    _patch(monkeypatch, plain_model)
    rc, out_plain, _ = _run(capsys, argv)
    _patch(monkeypatch, tta_model)
    rc2, out_tta, _ = _run(capsys, argv + ["--tta"])
    assert rc == rc2 == 0
    a, b = json.loads(out_plain), json.loads(out_tta)
    assert a["per_class"] == b["per_class"] and a["oa"] == b["oa"] and b["tta"] is True
    assert plain_model.batch_sizes == [3, 1] and tta_model.batch_sizes == [9, 3]  # 3 views per tile


def test_prompt_modes_reach_the_model(monkeypatch, capsys, synth_root):
    from prompts_db import PromptStore

    seen = {}
    for mode in ("climate", "generic", "store-generic", "none", "wrong"):
        model = StubModel(uses_text=True)
        _patch(monkeypatch, model)
        rc, out, err = _run(capsys, ["--model", "x", "--dataset", "synthearth", "--root", str(synth_root),
                                     "--split", "test", "--json", "--prompt-mode", mode])  # fmt: skip
        assert rc == 0, err
        assert json.loads(out)["prompt_mode"] == mode
        seen[mode] = model.prompts
    store = PromptStore()
    assert set(seen["climate"]) == {store.current(z, "openearthmap").text for z in ("Cfa", "BWh")}
    assert set(seen["generic"]) == {"It is a remote sensing image."}  # the paper's Table V sentence
    assert set(seen["store-generic"]) == {store.current(None, "openearthmap").text}
    assert set(seen["none"]) == {""}
    assert set(seen["wrong"]).isdisjoint(seen["climate"]) and len(seen["wrong"]) == 4


# ----------------------------------------------------------------------------- zero-shot


def test_class_map_zero_shot_on_loveda(monkeypatch, capsys, loveda_root):
    gt = _labels(loveda_root, "loveda", "val")  # LoveDA indices 0..6, 255 ignore
    valid = gt != 255
    forest = 5  # LoveDA index of "forest"
    _patch(monkeypatch, StubModel(const=4))  # OEM index 4 = tree
    rc, out, err = _run(capsys, ["--model", "x", "--dataset", "loveda", "--root", str(loveda_root), "--split", "val",
                                 "--json", "--class-map", "openearthmap_to_loveda"])  # fmt: skip
    assert rc == 0, err
    rep = json.loads(out)
    n_forest, n_valid = int((gt == forest).sum()), int(valid.sum())
    assert rep["per_class"]["forest"]["iou"] == pytest.approx(100 * n_forest / n_valid, abs=0.01)
    assert rep["oa"] == pytest.approx(100 * n_forest / n_valid, abs=0.01)
    assert set(rep["per_class"]) == {
        "background",
        "building",
        "road",
        "water",
        "barren",
        "forest",
        "agriculture",
    }
    assert rep["class_map"].endswith("openearthmap_to_loveda.json")


def test_class_map_unmapped_prediction_is_a_miss_and_only_overlap_scored(
    monkeypatch, capsys, loveda_root, tmp_path
):
    cmap = tmp_path / "m.yaml"
    cmap.write_text("tree: forest\nbuilding: building\nrangeland: null\n")
    _patch(monkeypatch, StubModel(const=1))  # OEM rangeland: unmapped
    rc, out, err = _run(capsys, ["--model", "x", "--dataset", "loveda", "--root", str(loveda_root), "--split", "val",
                                 "--json", "--class-map", str(cmap)])  # fmt: skip
    assert rc == 0, err
    rep = json.loads(out)
    assert set(rep["per_class"]) == {"building", "forest"}
    assert rep["oa"] == 0.0 and rep["per_class"]["forest"]["recall"] == 0.0 and rep["miou"] == 0.0
    assert "zero-shot" in rep["note"]


def test_shipped_class_maps_are_valid():
    from metaseg.classes import get_class_set

    oem = get_class_set("openearthmap")
    for path in sorted(class_map.CLASS_MAP_DIR.glob("*.json")):
        cm = evaluate.load_class_map(path)
        target = get_class_set(cm["target"])
        lut = evaluate.class_map_lut(cm, oem.names, target.names, "openearthmap", target.name)
        assert (lut[:8] != 255).any()
    cm = evaluate.load_class_map("openearthmap_to_potsdam")
    lut = evaluate.class_map_lut(cm, oem.names, get_class_set("potsdam").names)
    assert (
        lut[oem.index_of("building")] == 1
        and lut[oem.index_of("road")] == 0
        and lut[oem.index_of("water")] == 255
    )


def test_class_map_errors(tmp_path):
    from metaseg.classes import get_class_set
    from metaseg.errors import ConfigError

    oem, lov = get_class_set("openearthmap"), get_class_set("loveda")
    with pytest.raises(ConfigError):
        evaluate.load_class_map(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"tree": "jungle"}')
    with pytest.raises(ConfigError, match="jungle"):
        evaluate.class_map_lut(evaluate.load_class_map(bad), oem.names, lov.names)
    with pytest.raises(ConfigError, match="targets potsdam"):
        evaluate.class_map_lut(evaluate.load_class_map("openearthmap_to_potsdam"), oem.names, lov.names,
                               "openearthmap", "loveda")  # fmt: skip


# ----------------------------------------------------------------------------- real checkpoint, errors


def test_end_to_end_tiny_real_checkpoint(capsys, synth_root, tmp_path):
    from metaseg.checkpoints import save_checkpoint
    from metaseg.models import create_model

    torch.manual_seed(0)
    model = create_model("baseline_demo", pretrained="none", class_set="openearthmap", decoder_dim=8)
    ckpt = save_checkpoint(model, tmp_path / "tiny")
    rc, out, err = _run(capsys, ["--checkpoint", str(ckpt), "--dataset", "synthearth", "--root", str(synth_root),
                                 "--split", "test", "--json", "--device", "cpu", "--limit", "2", "--tta"])  # fmt: skip
    assert rc == 0, err
    rep = json.loads(out)
    assert KEYS <= set(rep) and rep["n_images"] == 2 and rep["model"] == "baseline_demo"
    for k in ("miou", "oa", "mf1", "precision", "recall"):
        assert 0.0 <= rep[k] <= 100.0
    rc, table, err = _run(capsys, ["--checkpoint", str(ckpt), "--dataset", "synthearth", "--root", str(synth_root),
                                   "--split", "test", "--device", "cpu", "--limit", "1"])  # fmt: skip
    assert rc == 0, err
    assert "mIoU" in table and "building" in table and "OA" in table


def test_wrong_class_set_without_map_is_exit_2(monkeypatch, capsys, loveda_root):
    _patch(monkeypatch, StubModel(), class_set="openearthmap")
    rc, out, err = _run(
        capsys, ["--model", "x", "--dataset", "loveda", "--root", str(loveda_root), "--split", "val"]
    )
    assert rc == 2 and out == "" and err.count("\n") == 1 and "--class-map" in err


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--model", "no_such_model"], "no_such_model"),
        (["--checkpoint", "/nonexistent/ckpt.safetensors"], "ckpt"),
        (["--model", "baseline_demo", "--root", "/nonexistent/root"], "/nonexistent/root"),
        (["--model", "baseline_demo", "--dataset", "mnist"], "mnist"),
        (["--model", "baseline_demo", "--class-map", "/nonexistent/map.json"], "map.json"),
    ],
)
def test_user_errors_exit_2_one_line(capsys, synth_root, argv, needle):
    base = {"--dataset": "synthearth", "--root": str(synth_root), "--split": "test"}
    for i in range(0, len(argv) - 1):
        if argv[i] in base:
            base[argv[i]] = argv[i + 1]
    args = [a for i, a in enumerate(argv) if a not in base and (i == 0 or argv[i - 1] not in base)]
    full = args + [x for kv in base.items() for x in kv]
    rc, out, err = _run(capsys, full)
    assert rc == 2 and out == "" and err.count("\n") == 1 and needle in err, err


def test_model_without_shipped_weights_exit_2(monkeypatch, capsys, synth_root, tmp_path):
    import metaseg.checkpoints as ck

    monkeypatch.setattr(ck, "WEIGHTS_DIR", tmp_path / "empty")
    rc, out, err = _run(capsys, ["--model", "metasegnet_demo", "--dataset", "synthearth", "--root", str(synth_root),
                                 "--split", "test"])  # fmt: skip
    assert rc == 2 and err.startswith("error:") and "metasegnet_demo" in err and err.count("\n") == 1


@pytest.mark.slow
def test_end_to_end_tiny_metasegnet_with_prompts(capsys, synth_root, tmp_path):
    """The text path through a real MetaSegNet (loads the MiniLM text encoder: slow)."""
    from metaseg.checkpoints import save_checkpoint
    from metaseg.models import create_model

    torch.manual_seed(0)
    model = create_model("metasegnet_demo", pretrained="none", class_set="openearthmap", caf_dim=32, caf_heads=2,
                         embed_dim=32, decoder_dim=8, pos_grid=4)  # fmt: skip
    ckpt = save_checkpoint(model, tmp_path / "tiny_text")
    reports = {}
    for mode in ("climate", "wrong", "none"):
        rc, out, err = _run(capsys, ["--checkpoint", str(ckpt), "--dataset", "synthearth", "--root", str(synth_root),
                                     "--split", "test", "--json", "--device", "cpu", "--prompt-mode", mode])  # fmt: skip
        assert rc == 0, err
        reports[mode] = json.loads(out)
        assert reports[mode]["model"] == "metasegnet_demo" and reports[mode]["n_images"] == 4
    assert all(0.0 <= r["oa"] <= 100.0 for r in reports.values())


def test_potsdam_report_notes_clutter_is_not_scored():
    from metaseg.classes import get_class_set
    from metaseg.metrics import compute_metrics

    cs = get_class_set("potsdam")
    mat = np.diag([5, 5, 5, 5, 5, 5])
    mat[5, 0] = 5  # clutter predicted as impervious: hurts OA and impervious precision only
    rep = evaluate.build_report(compute_metrics(mat, scored=cs.scored, class_names=cs.names), cs, cs.scored,
                                dataset="potsdam", split="test", prompt_mode="climate", n_images=1, model="m")  # fmt: skip
    assert "clutter" not in rep["per_class"] and "clutter" in rep["note"]
    assert rep["oa"] == pytest.approx(100 * 30 / 35, abs=0.01)
    assert rep["per_class"]["impervious surfaces"]["precision"] == 50.0
    assert rep["units"] == "percent"


# ----------------------------------------------------------------------------- training prompts (issue 23)
def test_scores_with_the_prompts_the_checkpoint_was_trained_with(monkeypatch, capsys, synth_root):
    from prompts_db import PromptStore

    store = PromptStore()
    meta = {"class_set": "openearthmap", "prompt_mode": "climate", "train_prompt_hash": "abc",
            "train_prompts": {"Cfa": "the Cfa text this model was trained with"}}
    runs = {}
    for label, m, extra in (("recorded", meta, []), ("store", meta, ["--prompt-source", "store"]),
                            ("none", {"class_set": "openearthmap"}, [])):
        model = StubModel(uses_text=True)
        monkeypatch.setattr(evaluate, "load_model", lambda ckpt, name, dev, m=m, model=model: (model, m, "stub"))
        rc, out, err = _run(capsys, ["--model", "x", "--dataset", "synthearth", "--root", str(synth_root),
                                     "--split", "test", "--json", *extra])
        assert rc == 0, err
        runs[label] = (json.loads(out), set(model.prompts))
    rep, seen = runs["recorded"]
    assert seen == {"the Cfa text this model was trained with", store.current("BWh", "openearthmap").text}
    assert rep["prompt_source"].startswith("checkpoint + store") and "BWh" in rep["prompt_source"]
    assert rep["train_prompt_hash"] == "abc" and len(rep["prompt_hash"]) == 16
    rep_s, seen_s = runs["store"]
    assert seen_s == {store.current(z, "openearthmap").text for z in ("Cfa", "BWh")}
    assert rep_s["prompt_source"].startswith("store") and rep_s["prompt_hash"] != rep["prompt_hash"]
    rep_n, seen_n = runs["none"]
    assert "records no training prompts" in rep_n["prompt_source"] and seen_n == seen_s
    assert rep_n["prompt_hash"] == rep_s["prompt_hash"]  # same texts, same hash
