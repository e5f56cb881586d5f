"""Teaching benchmark: the taught demo pair vs an ilastik-style random forest on one real tile.

Usage::

    .venv/bin/python scripts/teach_bench.py [--tile-dir ../shared/realdata/loveda_rural_a]
        [--mode scribbles|split|both] [--budget-s 120] [--seed 0] [--work DIR] [--json]

The tile folder holds ``image.png`` (RGB) and ``mask.png`` (dense label, raw LoveDA encoding,
0 = no-data); it is read in place and never copied into the project (its licence differs).

* ``scribbles`` mode: for each class present, 10 discs of radius 8 px centred on pixels at least
  8 px inside that class (Euclidean distance to the nearest other pixel), clipped to the class,
  drawn with ``--seed`` (about 1 % of the pixels). A class too thin to hold such a centre gets its
  discs at its most interior pixels instead (reported as ``thin``).
* ``split`` mode: teach on the dense labels of three quadrants, score the fourth (``--quadrant``,
  default 3 = bottom right; ``all`` runs the four folds) — a stand-in for "another tile of the
  same region".

In each mode, on the same labels: ``metasegnet_demo`` and ``baseline_demo`` taught with
``training.finetune`` (``--budget-s`` each, same settings); the random-forest anchor
(scikit-learn, 100 trees, on Gaussian, gradient-magnitude and Laplacian-of-Gaussian features at
σ 0.7, 1.6, 3.5, 5, 10 of each RGB channel: 45 features, ilastik's pixel-classification recipe);
and the shipped demo pair zero-shot through ``training/class_maps/openearthmap_to_loveda.json``.
Scores (mIoU over the LoveDA classes present, OA, percent) are over the pixels *not* used for
teaching. The tile has no georeference: the bench gives it its known zone (``--zone``, LoveDA:
Cfa), so the text model sees the store's Cfa prompt when taught and when predicting — what
``metaseg predict --lat/--lon`` would resolve. One tile: a smoke signal, not a benchmark result.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_TILE = ROOT.parent / "shared" / "realdata" / "loveda_rural_a"
SIGMAS = (0.7, 1.6, 3.5, 5.0, 10.0)
MODELS = ("metasegnet_demo", "baseline_demo")


def fail(message: str) -> int:
    sys.stderr.write(f"error: {message}\n")
    return 2


# ----------------------------------------------------------------------------- labels
def scribbles(index: np.ndarray, seed: int, discs: int = 10, radius: int = 8, inside: float = 8.0,
              ignore: int = 255) -> tuple[np.ndarray, dict[str, Any]]:
    """Sparse label (class indices, 255 elsewhere) of seeded discs per class present."""
    from scipy.ndimage import distance_transform_edt

    rng = np.random.default_rng(seed)
    h, w = index.shape
    out = np.full(index.shape, ignore, dtype=np.uint8)
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    disc = (yy ** 2 + xx ** 2) <= radius ** 2
    info: dict[str, Any] = {}
    for c in sorted(int(v) for v in np.unique(index) if v != ignore):
        member = index == c
        dist = distance_transform_edt(np.pad(member, 1))[1:-1, 1:-1]
        cand = np.flatnonzero(dist.reshape(-1) >= inside)
        thin = len(cand) < discs
        if thin:  # too thin for centres 8 px inside: its most interior pixels
            cand = np.argsort(dist.reshape(-1))[::-1][:max(discs * 20, discs)]
            cand = cand[member.reshape(-1)[cand]]
        centres = rng.choice(cand, size=min(discs, len(cand)), replace=False)
        for idx in centres:
            cy, cx = divmod(int(idx), w)
            y0, y1, x0, x1 = max(0, cy - radius), min(h, cy + radius + 1), max(0, cx - radius), min(w, cx + radius + 1)
            d = disc[y0 - cy + radius:y1 - cy + radius, x0 - cx + radius:x1 - cx + radius]
            region = out[y0:y1, x0:x1]
            region[d & member[y0:y1, x0:x1]] = c
        info[str(c)] = {"centres": int(len(centres)), "thin": bool(thin), "pixels": int((out == c).sum())}
    return out, info


def quadrant_masks(shape: tuple[int, int], q: int) -> np.ndarray:
    """True on quadrant ``q`` (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right)."""
    h, w = shape
    m = np.zeros(shape, dtype=bool)
    ys = slice(0, h // 2) if q in (0, 1) else slice(h // 2, h)
    xs = slice(0, w // 2) if q in (0, 2) else slice(w // 2, w)
    m[ys, xs] = True
    return m


# ----------------------------------------------------------------------------- scoring
def score(gt: np.ndarray, pred: np.ndarray, where: np.ndarray, cs: Any) -> dict[str, Any]:
    from metaseg.metrics import evaluate_masks

    g = np.where(where, gt, 255).astype(np.uint8)
    m = evaluate_masks(g, pred.astype(np.int64), cs.num_classes, class_names=cs.names)
    per = {cs.names[i]: (None if np.isnan(m.iou[i]) else round(100 * float(m.iou[i]), 2)) for i in range(cs.num_classes)}
    return {"miou": round(100 * m.miou, 2), "oa": round(100 * m.oa, 2), "per_class_iou": per, "pixels": int(m.n_pixels)}


# ----------------------------------------------------------------------------- random forest
def rf_features(rgb: np.ndarray) -> np.ndarray:
    """H×W×45 float32: Gaussian, gradient magnitude, LoG at each σ of each channel."""
    from scipy import ndimage as ndi

    feats = []
    for ch in range(3):
        x = rgb[..., ch].astype(np.float32) / 255.0
        for s in SIGMAS:
            feats.append(ndi.gaussian_filter(x, s))
            feats.append(ndi.gaussian_gradient_magnitude(x, s))
            feats.append(ndi.gaussian_laplace(x, s))
    return np.stack(feats, axis=-1)


def random_forest(rgb: np.ndarray, label: np.ndarray, seed: int, max_samples: int = 100_000) -> tuple[np.ndarray, float]:
    from sklearn.ensemble import RandomForestClassifier

    t0 = time.monotonic()
    feats = rf_features(rgb)
    flat = feats.reshape(-1, feats.shape[-1])
    y = label.reshape(-1)
    idx = np.flatnonzero(y != 255)
    if len(idx) > max_samples:  # dense labels (split mode): a seeded subsample keeps fitting bounded
        idx = np.random.default_rng(seed).choice(idx, size=max_samples, replace=False)
    rf = RandomForestClassifier(n_estimators=100, n_jobs=2, random_state=seed)
    rf.fit(flat[idx], y[idx])
    pred = rf.predict(flat).reshape(label.shape).astype(np.uint8)
    return pred, time.monotonic() - t0


# ----------------------------------------------------------------------------- models
def predict(checkpoint: str, rgb: np.ndarray, prompt: str | None) -> np.ndarray:
    from metaseg.inference import Predictor

    pred = Predictor.from_checkpoint(checkpoint, "cpu")
    return pred.predict(rgb, prompt if pred.uses_text else None).index


def shipped(name: str, rgb: np.ndarray, zone: str) -> tuple[np.ndarray, float, str | None]:
    """Shipped demo weights, zero-shot, classes through openearthmap_to_loveda (unmapped = 255)."""
    from metaseg.checkpoints import demo_checkpoint_path
    from metaseg.classes import get_class_set
    from prompts_db.store import PromptStore
    from training.evaluate import class_map_lut, load_class_map

    t0 = time.monotonic()
    prompt = None
    if name.startswith("metasegnet"):
        with PromptStore() as store:
            prompt = store.current(zone, "openearthmap").text
    idx = predict(str(demo_checkpoint_path(name)), rgb, prompt)
    cmap = load_class_map(ROOT / "training" / "class_maps" / "openearthmap_to_loveda.json")
    oem, lov = get_class_set("openearthmap"), get_class_set("loveda")
    lut = np.asarray(class_map_lut(cmap, oem.names, lov.names, oem.name, lov.name), dtype=np.uint8)
    return lut[idx], time.monotonic() - t0, prompt


def taught(name: str, image: Path, label: Path, out: Path, rgb: np.ndarray, zone: str, budget: float, seed: int,
           recipe: Any = None) -> tuple[np.ndarray, dict[str, Any]]:
    from prompts_db.store import PromptStore
    from training.finetune import finetune

    with PromptStore() as store:
        prompt = store.current(zone, "loveda").text
    t0 = time.monotonic()
    res = finetune(name, [(image, label)], out=out, class_set="loveda", budget_s=budget, seed=seed,
                   prompt_for=lambda _p: prompt, recipe=recipe, show_bar=sys.stderr.isatty())
    t1 = time.monotonic()
    idx = predict(str(out), rgb, prompt)
    res["predict_seconds"] = round(time.monotonic() - t1, 2)
    res["teach_seconds"] = round(t1 - t0, 2)
    return idx, res


def run_case(kind: str, rgb: np.ndarray, gt: np.ndarray, teach: np.ndarray, scored: np.ndarray, work: Path,
             args: argparse.Namespace, recipe: Any) -> dict[str, Any]:
    from PIL import Image

    from metaseg.classes import get_class_set

    cs = get_class_set("loveda")
    work.mkdir(parents=True, exist_ok=True)
    label_path = work / "label_loveda_teach.png"  # project label file: raw LoveDA codes, 255 = unlabelled
    raw = np.where(teach == 255, 255, teach.astype(np.int64) + 1).astype(np.uint8)
    Image.fromarray(raw).save(label_path)
    image = Path(args.tile_dir) / "image.png"
    rows: dict[str, Any] = {"labelled_pixels": int((teach != 255).sum()), "scored_pixels": int(scored.sum())}
    for name in args.models:
        idx, res = taught(name, image, label_path, work / f"{name}_taught", rgb, args.zone, args.budget_s,
                          args.seed, recipe)
        rows[f"{name} taught"] = {**score(gt, idx, scored, cs), "seconds": res["teach_seconds"],
                                  "predict_seconds": res["predict_seconds"], "steps": res["steps"],
                                  "stopped": res["stopped"], "flips_cached": res.get("flips_cached"),
                                  "timing": res.get("timing")}
        print(f"[{kind}] {name} taught: {rows[f'{name} taught']['miou']} mIoU, {res['steps']} steps", file=sys.stderr)
    if not args.skip_rf:
        pred, sec = random_forest(rgb, teach, args.seed)
        rows["random forest"] = {**score(gt, pred, scored, cs), "seconds": round(sec, 2)}
        print(f"[{kind}] random forest: {rows['random forest']['miou']} mIoU", file=sys.stderr)
    for name in [] if args.skip_shipped else args.models:
        idx, sec, _ = shipped(name, rgb, args.zone)
        rows[f"{name} shipped"] = {**score(gt, idx, scored, cs), "seconds": round(sec, 2)}
    return rows


def parse_recipe(items: list[str]) -> Any:
    import dataclasses

    from training.finetune import Recipe

    changes: dict[str, Any] = {}
    fields = {f.name: f.type for f in dataclasses.fields(Recipe)}
    for item in items:
        key, _, value = item.partition("=")
        if key not in fields:
            raise SystemExit(fail(f"unknown recipe key {key!r}; valid: {', '.join(fields)}"))
        changes[key] = json.loads(value)
    return Recipe(**changes)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tile-dir", default=str(DEFAULT_TILE), help="folder with image.png and mask.png (raw LoveDA)")
    p.add_argument("--mode", choices=("scribbles", "split", "both"), default="both")
    p.add_argument("--quadrant", default="3", help="held-out quadrant in split mode: 0-3 or all (default 3)")
    p.add_argument("--budget-s", type=float, default=120.0, help="teaching budget per model (default 120)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--zone", default="Cfa", help="the tile's Köppen zone (LoveDA: Cfa)")
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--skip-rf", action="store_true", help="leave out the random-forest anchor")
    p.add_argument("--skip-shipped", action="store_true", help="leave out the shipped demo pair")
    p.add_argument("--recipe", nargs="*", default=[], metavar="KEY=JSON", help="override a finetune recipe field")
    p.add_argument("--work", default=str(ROOT / "runs" / "teach_bench"), help="where checkpoints/labels go")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    tile_dir = Path(args.tile_dir)
    image, mask = tile_dir / "image.png", tile_dir / "mask.png"
    if not image.is_file() or not mask.is_file():
        return fail(f"the real tile is missing: need {image} and {mask} (LoveDA tile, not part of the repo; "
                    "see ../shared/realdata/README.md)")
    if args.quadrant != "all" and args.quadrant not in ("0", "1", "2", "3"):
        return fail(f"--quadrant must be 0, 1, 2, 3 or all, got {args.quadrant!r}")
    recipe = parse_recipe(args.recipe)

    from metaseg.classes import get_class_set
    from metaseg.geo import read_label, read_tile

    cs = get_class_set("loveda")
    tile = read_tile(image)
    rgb = tile.rgb[..., :3]
    gt = read_label(mask, cs, rgb.shape[:2])
    report: dict[str, Any] = {"tile": str(tile_dir), "budget_s": args.budget_s, "seed": args.seed, "zone": args.zone,
                              "recipe": recipe.to_dict(), "note": "one tile: a smoke signal, not a benchmark result"}
    t0 = time.monotonic()
    work = Path(args.work)
    if args.mode in ("scribbles", "both"):
        teach, info = scribbles(gt, args.seed)
        scored = (teach == 255) & (gt != 255)
        rows = run_case("scribbles", rgb, gt, teach, scored, work / "scribbles", args, recipe)
        rows["scribbles"] = {cs.names[int(k)]: v for k, v in info.items()}
        report["scribbles"] = rows
    if args.mode in ("split", "both"):
        folds = range(4) if args.quadrant == "all" else [int(args.quadrant)]
        report["split"] = {}
        for q in folds:
            held = quadrant_masks(gt.shape, q)
            teach = np.where(held, 255, gt).astype(np.uint8)
            scored = held & (gt != 255)
            report["split"][f"quadrant {q}"] = run_case(f"split q{q}", rgb, gt, teach, scored, work / f"split_q{q}",
                                                        args, recipe)
    report["seconds"] = round(time.monotonic() - t0, 1)
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        print(format_report(report))
    return 0


def format_report(report: dict[str, Any]) -> str:
    lines = [f"teach_bench on {report['tile']} (budget {report['budget_s']:g} s, seed {report['seed']}) — "
             f"{report['note']}"]

    def table(title: str, rows: dict[str, Any]) -> None:
        lines.append(f"\n{title}: {rows['labelled_pixels']} labelled px, scored on {rows['scored_pixels']} others")
        lines.append(f"{'method':28s} {'mIoU':>6s} {'OA':>6s} {'seconds':>8s} {'steps':>6s}")
        for key, v in rows.items():
            if isinstance(v, dict) and "miou" in v:
                lines.append(f"{key:28s} {v['miou']:6.2f} {v['oa']:6.2f} {v['seconds']:8.1f} {str(v.get('steps', '')):>6s}")

    if "scribbles" in report:
        table("scribbles", report["scribbles"])
    for name, rows in (report.get("split") or {}).items():
        table(f"split, held out {name}", rows)
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
