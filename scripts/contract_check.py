"""Refactoring guard: fingerprints of everything the command-line contract promises.

``python scripts/contract_check.py --out FILE.json`` records, in one process:

* ``predict``: the sha256 of the mask that ``python -m metaseg predict`` writes for every shipped
  example tile (``static/examples``), both demo models and every backend (torch, onnx, onnx-int8),
  plus the sorted JSON keys of its ``--json`` output;
* ``locate``: the ``--json`` object of ``python -m metaseg locate`` for every example tile;
* ``evaluate`` / ``sweep``: the numbers of ``training.evaluate`` and ``training.sweep`` (variants
  climate, wrong and none, with the baseline) on a small SynthEarth split made with a fixed seed;
* ``map``: the sha256 of every mask ``python -m metaseg map`` writes for the example GeoTIFFs and
  the summary's areas.

``python scripts/contract_check.py --out after.json --compare before.json`` then exits 1 and names
every entry that differs (timings are never recorded). Commands run through their own ``main``,
so the check exercises exactly the code a user runs, without paying the import cost 40 times.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODELS = ("metasegnet_demo", "baseline_demo")
BACKENDS = ("torch", "onnx", "onnx-int8")
VARIANTS = ("climate", "wrong", "none")


def _examples() -> list[Path]:
    ex = ROOT / "static" / "examples"
    tiles = [p for p in sorted(ex.rglob("*.tif")) if not p.stem.endswith("_label")]
    return tiles


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _call(main, argv: list[str]) -> dict:
    """Run one command's ``main`` in-process; return its ``--json`` object (exit 0 required)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(argv)
    if code not in (0, None):
        raise SystemExit(f"{argv} exited {code}")
    text = buf.getvalue().strip()
    return json.loads(text) if text else {}


def _rounded(value):
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items() if k not in ("seconds", "experiment_id")}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def record(work: Path) -> dict:
    from metaseg.cli import main as metaseg_main
    from training.evaluate import main as evaluate_main
    from training.sweep import main as sweep_main
    from training.synth.cli import main as synth_main

    out: dict = {"predict": {}, "locate": {}}
    for tile in _examples():
        rel = str(tile.relative_to(ROOT))
        out["locate"][rel] = _call(metaseg_main, ["locate", str(tile), "--json"])
        for model in MODELS:
            for backend in BACKENDS:
                mask = work / f"{tile.stem}_{model}_{backend}.tif"
                res = _call(metaseg_main, ["predict", str(tile), "--model", model, "--backend",
                                           backend, "--out", str(mask), "--json"])
                out["predict"][f"{rel}|{model}|{backend}"] = {
                    "mask": _sha(mask), "keys": sorted(res), "class_fraction": _rounded(
                        res.get("class_fraction")), "prompt": res.get("prompt")}
                print(f"predict {rel} {model} {backend}", file=sys.stderr)

    data = work / "synth"
    with contextlib.redirect_stdout(io.StringIO()):
        synth_main(["--out", str(data), "--n", "6", "--size", "128", "--seed", "7", "--no-progress"])
    split = "test" if (data / "test").exists() else "train"
    common = ["--dataset", "synthearth", "--root", str(data), "--split", split]
    out["evaluate"] = {m: _rounded(_call(evaluate_main, ["--model", m, *common, "--json",
                                                         "--prompt-mode", "climate"]))
                       for m in MODELS}
    var = [x for v in VARIANTS for x in ("--variant", v)]
    sweep = _call(sweep_main, ["--model", MODELS[0], "--baseline", MODELS[1], *common, *var,
                               "--workers", "1", "--json", "--no-progress"])
    out["sweep"] = _rounded(sweep)
    print("evaluate + sweep", file=sys.stderr)

    geotiffs = [str(p) for p in _examples()]
    mapdir = work / "map"
    summary = _call(metaseg_main, ["map", *geotiffs, "--out", str(mapdir), "--model", MODELS[0],
                                   "--workers", "1", "--json"])
    out["map"] = {"masks": {p.name: _sha(p) for p in sorted((mapdir / "masks").glob("*.tif"))},
                  "area_ha": _rounded(summary.get("area_ha")),
                  "status": sorted((Path(t["path"]).name, t["status"]) for t in summary["tiles"])}
    print("map", file=sys.stderr)
    return out


def _diff(a, b, path="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        lines = []
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                lines.append(f"{path}/{k}: only in {'after' if k in b else 'before'}")
            else:
                lines += _diff(a[k], b[k], f"{path}/{k}")
        return lines
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="where to write the fingerprints")
    ap.add_argument("--compare", type=Path, help="fingerprints recorded before; exit 1 on a difference")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("METASEG_DB", str(Path(tmp) / "prompts.db"))
        result = record(Path(tmp))
    args.out.write_text(json.dumps(result, indent=1, sort_keys=True))
    if args.compare:
        diffs = _diff(json.loads(args.compare.read_text()), json.loads(args.out.read_text()))
        for line in diffs:
            print(line)
        print(f"{len(diffs)} difference(s)")
        return 1 if diffs else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
