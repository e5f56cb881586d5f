"""Prompt ablation of the demo pair on held-out SynthEarth tiles → ``docs/RESULTS.md``.

``python scripts/ablation.py [--test-root runs/data/synth_test] [--out docs/RESULTS.md]``

The analogue of the paper's Table V (no text / generic / climate prompt) on SynthEarth, where
about a fifth of the pixels can only be labelled from the climate zone (docs/SYNTHEARTH.md).
Rows:

* ``baseline_demo`` (no text path at all);
* ``metasegnet_demo`` with ``--prompt-mode`` ``none`` (empty text), ``store-generic`` (the
  store's zone-free prompt; the row is labelled "generic" in docs/RESULTS.md and was measured with
  this text, not with the paper's "It is a remote sensing image.", which is ``--prompt-mode
  generic`` since issue 12), ``climate`` (the tile's zone prompt) and ``wrong`` (``training.datasets``'
  fixed ``WRONG_ZONE`` table: another main group; ``Aw → Dfc`` is a zone the model never saw);
* ``metasegnet_demo`` with the **partner** zone's prompt (``training.synth.partner_zone``: same
  visual style, every ambiguous rule flipped — the maximally wrong prompt among the zones the
  model was trained on). The reader has no such mode, so this row takes the ``climate`` dataset
  and swaps each tile's prompt for the store prompt of its partner zone.

Scores come from :func:`training.evaluate.evaluate_dataset` (the code behind
``python -m training.evaluate``; values in percent, one confusion matrix over the split). On top
of that, each tile's material map is regenerated from the manifest (``generate_tile`` is
deterministic) to report pixel accuracy separately on the *ambiguous* materials (striped, bright,
dark: class depends on the zone) and on all other pixels. A recording wrapper around the model
keeps the predictions of the same pass, so nothing is run twice.

The test set must come from a seed the models were never trained on: the script reads the
training data's seed from the checkpoints' metadata and refuses to score on it. With no test set
at ``--test-root`` it generates one (240 tiles of 256², seed 12345, all ``test``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PAPER_TABLE_V = (("no text", 67.1), ("generic prompt \"remote sensing image\"", 69.9), ("climate prompt", 70.4))
DEFAULT_TEST_SEED = 12345


# ------------------------------------------------------------------------------------- helpers
def sha256_short(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


def ensure_test_set(root: Path, n: int, seed: int) -> dict[str, Any]:
    """Generate the held-out test set with ``python -m training.synth`` unless it exists."""
    from training.synth import read_manifest

    if not (root / "synthearth.json").is_file():
        cmd = [sys.executable, "-m", "training.synth", "--out", str(root), "--n", str(n), "--size", "256",
               "--seed", str(seed), "--split-fractions", "0,0,1", "--no-progress", "--json"]
        print("generating test set:", " ".join(cmd), file=sys.stderr)
        subprocess.run(cmd, check=True, cwd=ROOT)
    return read_manifest(root)


def training_seeds(metas: list[dict[str, Any]]) -> set[int]:
    """Seeds of the SynthEarth data the checkpoints were trained on (from their metadata)."""
    from training.synth import read_manifest

    seeds: set[int] = set()
    for meta in metas:
        data = meta.get("train_data") or {}
        if isinstance(data.get("seed"), int):
            seeds.add(int(data["seed"]))
        root = (meta.get("train_config") or {}).get("data_root")
        if root and (ROOT / root).is_dir():
            man = read_manifest(ROOT / root)
            if isinstance(man.get("seed"), int):
                seeds.add(int(man["seed"]))
    return seeds


class Recorder:
    """Callable stand-in for a ``SegModel`` that keeps each batch's argmax (CPU, uint8).

    ``evaluate_dataset`` only calls the model, reads ``uses_text`` and ``parameters()``; the
    wrapper forwards those, so the scores are exactly those of the wrapped model.
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self.uses_text = model.uses_text
        self.preds: list[Any] = []

    def parameters(self):
        return self.model.parameters()

    def __call__(self, images: Any, text: Any = None) -> Any:
        out = self.model(images, text=text) if self.uses_text else self.model(images)
        self.preds.append(out.logits.argmax(1).to("cpu", dtype=__import__("torch").uint8))
        return out


AMBIGUOUS = ("striped", "bright", "dark")


def material_maps(dataset: Any, manifest: dict[str, Any], limit: int | None = None) -> list[Any]:
    """Per tile (dataset order): H×W uint8 map, 1/2/3 = striped/bright/dark material, 0 = other.

    Regenerated exactly from the manifest (seed, index, zone); the regenerated labels are checked
    against the files on disk.
    """
    import numpy as np

    from training.synth import M_BRIGHT, M_DARK, M_STRIPED, generate_tile

    by_file = {t["file"]: t for t in manifest["tiles"]}
    masks = []
    for i, sample in enumerate(dataset.samples[:limit]):
        t = by_file[Path(sample.image).name]
        tile = generate_tile(t["zone"], size=int(manifest["size"]), seed=int(manifest["seed"]), index=int(t["index"]))
        _, label = dataset.load_arrays(i)
        expect = dataset.class_set.decode(tile.label)
        if not np.array_equal(expect, label):
            raise RuntimeError(f"regenerated labels of {sample.image} differ from the file (generator version?)")
        amb = np.zeros(tile.material.shape, np.uint8)
        for code, material in enumerate((M_STRIPED, M_BRIGHT, M_DARK), start=1):
            amb[tile.material == material] = code
        masks.append(amb)
    return masks


# ------------------------------------------------------------------------------------- runs
def run_row(model: Any, dataset: Any, masks: list[Any], batch_size: int, tta: bool,
            limit: int | None = None) -> dict[str, Any]:
    """Official metrics (percent) + ambiguous / other pixel accuracy of one model × prompt setting."""
    import numpy as np

    from training.evaluate import build_report, evaluate_dataset

    rec = Recorder(model)
    t0 = time.perf_counter()
    metrics, n = evaluate_dataset(rec if not tta else model, dataset, class_set=dataset.class_set,
                                  batch_size=batch_size, tta=tta, limit=limit)
    seconds = time.perf_counter() - t0
    report = build_report(metrics, dataset.class_set, tuple(dataset.class_set.scored), n_images=n,
                          seconds=round(seconds, 1))
    if not tta:
        preds = [p for batch in rec.preds for p in batch.numpy()]
        hits = np.zeros(4, np.int64)  # other, striped, bright, dark
        tots = np.zeros(4, np.int64)
        for i, (pred, amb) in enumerate(zip(preds, masks, strict=True)):
            _, label = dataset.load_arrays(i)
            valid = label != dataset.class_set.ignore_index
            ok = (pred == label) & valid
            hits += np.bincount(amb[ok], minlength=4)
            tots += np.bincount(amb[valid], minlength=4)
        report["acc_ambiguous"] = round(100.0 * hits[1:].sum() / max(1, tots[1:].sum()), 2)
        report["acc_other"] = round(100.0 * hits[0] / max(1, tots[0]), 2)
        for code, name in enumerate(AMBIGUOUS, start=1):
            report[f"acc_{name}"] = round(100.0 * hits[code] / max(1, tots[code]), 2)
            report[f"share_{name}"] = round(100.0 * tots[code] / max(1, tots.sum()), 2)
        report["ambiguous_share"] = round(100.0 * tots[1:].sum() / max(1, tots.sum()), 2)
    del np
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Prompt ablation of the demo pair on held-out SynthEarth tiles.")
    p.add_argument("--test-root", default="runs/data/synth_test", help="held-out SynthEarth set (made if missing)")
    p.add_argument("--test-n", type=int, default=240, help="tiles to generate when the set is missing")
    p.add_argument("--test-seed", type=int, default=DEFAULT_TEST_SEED, help="seed when generating the set")
    p.add_argument("--metasegnet", default=None, help="MetaSegNet checkpoint (default: shipped metasegnet_demo)")
    p.add_argument("--baseline", default=None, help="baseline checkpoint (default: shipped baseline_demo)")
    p.add_argument("--out", default="docs/RESULTS.md", help="Markdown report to write")
    p.add_argument("--json-out", default="runs/ablation/ablation.json", help="raw reports (JSON)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tta", action="store_true", help="flip TTA (no ambiguous-pixel diagnostics then)")
    p.add_argument("--limit", type=int, default=None, help="only the first N test tiles (smoke tests)")
    p.add_argument("--from-json", default=None, help="only re-render --out from a saved --json-out file")
    args = p.parse_args(argv)
    if args.from_json:
        from metaseg.classes import get_class_set

        data = json.loads((ROOT / args.from_json).read_text())
        rows = [(r.pop("model"), r.pop("prompt"), r) for r in data["rows"]]
        info = data["info"]
        (ROOT / args.out).write_text(render(rows, info, get_class_set(rows[0][2]["class_set"]),
                                            info.get("command", "python scripts/ablation.py")))
        print(f"re-rendered {args.out} from {args.from_json}", file=sys.stderr)
        return 0

    import torch

    from metaseg.checkpoints import demo_checkpoint_path, load_checkpoint
    from training.synth import partner_zone
    from training.datasets import build_dataset

    torch.set_num_threads(args.threads)
    test_root = (ROOT / args.test_root) if not Path(args.test_root).is_absolute() else Path(args.test_root)
    manifest = ensure_test_set(test_root, args.test_n, args.test_seed)

    ck_meta = demo_checkpoint_path("metasegnet_demo") if args.metasegnet is None else Path(args.metasegnet)
    ck_base = demo_checkpoint_path("baseline_demo") if args.baseline is None else Path(args.baseline)
    meta_model, meta_meta = load_checkpoint(ck_meta, expected_name="metasegnet_demo")
    base_model, base_meta = load_checkpoint(ck_base, expected_name="baseline_demo",
                                            text_encoder_module=None)
    seeds = training_seeds([meta_meta, base_meta])
    if int(manifest.get("seed", -1)) in seeds:
        raise SystemExit(f"error: test set seed {manifest.get('seed')} was used for training ({sorted(seeds)})")

    datasets = {mode: build_dataset("synthearth", test_root, "test", prompt_mode=mode)
                for mode in ("climate", "store-generic", "none", "wrong")}
    climate = datasets["climate"]
    partner = build_dataset("synthearth", test_root, "test", prompt_mode="climate")
    partner.prompts = [partner.resolver.text_for_zone(partner_zone(z)) for z in partner.zones]
    masks = material_maps(climate, manifest, args.limit) if not args.tta else []
    train_prompts = meta_meta.get("train_prompts") or {}
    prompt_drift = sorted(z for z in set(climate.zones)
                          if z in train_prompts and train_prompts[z] != climate.resolver.text_for_zone(z))

    rows: list[tuple[str, str, dict[str, Any]]] = []
    plan = [
        ("baseline_demo", "— (no text path)", base_model, climate),
        ("metasegnet_demo", "none (empty text)", meta_model, datasets["none"]),
        ("metasegnet_demo", "generic", meta_model, datasets["store-generic"]),
        ("metasegnet_demo", "climate (true zone)", meta_model, climate),
        ("metasegnet_demo", "wrong: WRONG_ZONE table (`--prompt-mode wrong`)", meta_model, datasets["wrong"]),
        ("metasegnet_demo", "wrong: partner zone (all 3 rules flipped)", meta_model, partner),
    ]
    for model_name, prompt, model, ds in plan:
        print(f"evaluating {model_name} / {prompt} ...", file=sys.stderr, flush=True)
        rep = run_row(model, ds, masks, args.batch_size, args.tta, args.limit)
        print(f"  mIoU {rep['miou']:.2f}  OA {rep['oa']:.2f}  ({rep['seconds']} s)", file=sys.stderr, flush=True)
        rows.append((model_name, prompt, rep))

    info = {
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "test_root": str(args.test_root), "test_seed": manifest.get("seed"),
        "test_n": min(len(climate), args.limit or len(climate)),
        "test_size": manifest.get("size"), "synth_version": manifest.get("version"),
        "train_seeds": sorted(seeds), "tta": bool(args.tta),
        "checkpoints": {str(ck_meta): sha256_short(Path(str(ck_meta))), str(ck_base): sha256_short(Path(str(ck_base)))},
        "prompt_drift": prompt_drift,
        "meta_train": meta_meta.get("train_summary"), "base_train": base_meta.get("train_summary"),
        "val": {"metasegnet_demo": (meta_meta.get("val") or {}).get("miou"),
                "baseline_demo": (base_meta.get("val") or {}).get("miou")},
    }
    info["command"] = " ".join(["python scripts/ablation.py"] + list(argv if argv is not None else sys.argv[1:]))
    json_out = ROOT / args.json_out
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps({"info": info, "rows": [{"model": m, "prompt": p_, **r} for m, p_, r in rows]},
                                   indent=2, default=str))
    out = ROOT / args.out
    out.write_text(render(rows, info, climate.class_set, info["command"]))
    print(f"wrote {out} and {json_out}", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------- report
def render(rows: list[tuple[str, str, dict[str, Any]]], info: dict[str, Any], class_set: Any, command: str) -> str:
    names = [class_set.names[i] for i in class_set.scored]

    def f(v: Any) -> str:
        return "–" if v is None else f"{v:.1f}"

    by = {p: r for _, p, r in rows}
    base = rows[0][2]
    clim = by["climate (true zone)"]
    part = by["wrong: partner zone (all 3 rules flipped)"]
    table_wrong = by["wrong: WRONG_ZONE table (`--prompt-mode wrong`)"]
    amb = "acc_ambiguous" in base
    head = ["model", "prompt"] + names + ["**mIoU**", "OA"]
    lines = [
        "# Results",
        "",
        "Prompt ablation of the shipped CPU demo pair (paper Table V analogue) on **held-out SynthEarth**",
        "tiles. Generated by one script — do not edit by hand:",
        "",
        "```bash",
        "bash scripts/train_demo.sh      # data (train seed 0, test seed 12345) + both trainings + export",
        command,
        "```",
        "",
        f"* Test set: `{info['test_root']}` — {info['test_n']} tiles of {info['test_size']}², SynthEarth "
        f"v{info['synth_version']}, **seed {info['test_seed']}** (training data seed(s): "
        f"{', '.join(map(str, info['train_seeds'])) or 'unknown'}; the script refuses to score on a training seed).",
        "* Checkpoints (sha256/12): " + ", ".join(f"`{Path(k).name}` {v}" for k, v in info["checkpoints"].items()) + ".",
        f"* Flip TTA: {'on' if info['tta'] else 'off'}. Values in percent; mIoU over the 8 OpenEarthMap classes; "
        "one confusion matrix over the whole split (`training.evaluate.evaluate_dataset`).",
        f"* Generated {info['date']}.",
        "",
        "## Prompt ablation (per-class IoU, mIoU, OA)",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|",
    ]
    for model, prompt, r in rows:
        cells = [f"`{model}`", prompt] + [f(r["per_class"].get(n, {}).get("iou")) for n in names]
        cells += [f"**{f(r['miou'])}**", f(r["oa"])]
        lines.append("| " + " | ".join(cells) + " |")
    if amb:
        lines += [
            "",
            "## Pixel accuracy by material (where the prompt matters)",
            "",
            "The three *ambiguous* materials take their class from the zone's rule (docs/SYNTHEARTH.md); "
            "the image cannot tell which. Shares of the test pixels: "
            + ", ".join(f"{n} {base[f'share_{n}']:.1f} %" for n in AMBIGUOUS)
            + f", all other materials {100 - base['ambiguous_share']:.1f} %.",
            "",
            "| model | prompt | striped (agri. / rangeland) | bright (bareland / developed) | dark (water / tree) "
            "| all ambiguous | all other |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for model, prompt, r in rows:
            lines.append("| " + " | ".join([f"`{model}`", prompt] + [f(r.get(f"acc_{n}")) for n in AMBIGUOUS]
                                            + [f(r.get("acc_ambiguous")), f(r.get("acc_other"))]) + " |")
    d_clim = clim["miou"] - base["miou"]
    lines += [
        "",
        "## Targets (measured, not tuned after the fact)",
        "",
        f"* MetaSegNet with the climate prompt vs the baseline: **{d_clim:+.1f} mIoU** "
        f"(target ≥ +5: {'met' if d_clim >= 5 else 'NOT met'}).",
        f"* Wrong climate prompt below the climate prompt: partner zone {part['miou']:.1f} vs {clim['miou']:.1f} "
        f"({'met' if part['miou'] < clim['miou'] else 'NOT met'}); WRONG_ZONE table {table_wrong['miou']:.1f} "
        f"({'met' if table_wrong['miou'] < clim['miou'] else 'NOT met'}).",
    ]
    if amb:
        lines += [
            f"* Ambiguous pixels (striped / bright / dark materials, {base['ambiguous_share']:.1f} % of the test "
            f"pixels; their class is set by the zone, not by the image): baseline {base['acc_ambiguous']:.1f} % "
            f"correct, MetaSegNet climate {clim['acc_ambiguous']:.1f} %, partner prompt {part['acc_ambiguous']:.1f} %. "
            "A model that ignores the prompt can do no better than guess one reading per visual style there.",
            "* Per ambiguous material, climate prompt minus baseline: "
            + ", ".join(f"{n} {clim[f'acc_{n}'] - base[f'acc_{n}']:+.1f}" for n in AMBIGUOUS)
            + " points of pixel accuracy; partner prompt minus climate prompt: "
            + ", ".join(f"{n} {part[f'acc_{n}'] - clim[f'acc_{n}']:+.1f}" for n in AMBIGUOUS) + ".",
        ]
    if info["prompt_drift"]:
        lines.append(f"* Note: the prompt store's current text differs from the training prompt for "
                     f"{', '.join(info['prompt_drift'])} (the climate row used the store's text).")
    lines += [
        "",
        "## The paper's numbers, for context (Table V, OpenEarthMap val, Swin-B + BERT)",
        "",
        "| prompt | mIoU |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {v:.1f} |" for name, v in PAPER_TABLE_V]
    lines += [
        "",
        "The paper's gap is small (+3.3 mIoU for the climate prompt over no text) because real imagery",
        "mostly gives the region away by itself. SynthEarth is built so that it does not: paired zones",
        "render byte-identical images with opposite labels for three materials (docs/SYNTHEARTH.md), so",
        "the gap here measures how well the model reads the prompt, not how realistic the data is. The",
        "SynthEarth numbers are **not comparable** to the paper's and say nothing about real imagery.",
        "",
        "## Training (both models, identical settings; see metaseg/weights/MODEL_CARD.md)",
        "",
    ]
    for key, name in (("meta_train", "metasegnet_demo"), ("base_train", "baseline_demo")):
        s = info.get(key) or {}
        if s:
            lines.append(f"* `{name}`: {s.get('steps')} steps, {s.get('seconds')} s wall clock in all, val mIoU "
                         f"{100 * (info['val'].get(name) or 0):.1f} (64 val tiles of the training seed, climate prompt).")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
