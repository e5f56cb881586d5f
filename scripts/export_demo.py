"""Copy the demo training runs' final checkpoints into ``metaseg/weights`` as float16.

``python scripts/export_demo.py [--runs runs/demo]`` (called by ``scripts/train_demo.sh``).

For each of ``metasegnet_demo`` and ``baseline_demo``: load ``RUNS/<name>/last`` (``--which``) with
:func:`metaseg.checkpoints.load_checkpoint`, keep its metadata (training config, prompts per zone,
validation mIoU) and add the run summary (steps, wall-clock seconds per stage) from
``RUNS/<name>.stage*.summary.json`` (or ``RUNS/<name>.summary.json``), then write ``metaseg/weights/<name>.safetensors`` + ``.json`` with
``half=True``. No pickle anywhere.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NAMES = ("metasegnet_demo", "baseline_demo")
RESERVED = {"format_version", "config", "class_set", "num_classes", "weights_dtype"}


def export(runs: Path, out_dir: Path, which: str = "last") -> list[Path]:
    """Export both demo runs' ``which`` checkpoint (``last``: both after the same number of steps,
    no selection on validation; ``best``: best validation mIoU); returns the ``.safetensors`` paths."""
    from metaseg.checkpoints import load_checkpoint, save_checkpoint
    from training.synth import read_manifest

    written = []
    for name in NAMES:
        model, meta = load_checkpoint(runs / name / which, expected_name=name)
        extra = {k: v for k, v in meta.items() if k not in RESERVED}
        extra["exported_checkpoint"] = which
        summaries = []  # one per training stage (stage1, stage2, ...), or a single run
        for path in sorted(runs.glob(f"{name}.stage*.summary.json")) or [runs / f"{name}.summary.json"]:
            lines = path.read_text().strip().splitlines() if path.is_file() else []
            if lines:
                summaries.append(json.loads(lines[-1]))
        if summaries:
            extra["train_summary"] = {"stages": summaries, "steps": summaries[-1].get("steps"),
                                      "seconds": round(sum(float(s.get("seconds") or 0) for s in summaries), 1)}
        root = Path(str((meta.get("train_config") or {}).get("data_root", "")))
        manifest = read_manifest(root if root.is_absolute() else ROOT / root) if str(root) else {}
        if manifest:
            extra["train_data"] = {k: manifest.get(k) for k in ("name", "version", "seed", "size", "n", "zones",
                                                                  "split_fractions")}
        extra["source_run"] = str((runs / name).relative_to(ROOT)) if (runs / name).is_relative_to(ROOT) else str(runs / name)
        written.append(save_checkpoint(model, out_dir / name, extra=extra, half=True))
        print(f"{name}: {written[-1]} ({written[-1].stat().st_size / 1e6:.1f} MB)")
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default=str(ROOT / "runs" / "demo"), help="folder with <name>/best.* runs")
    p.add_argument("--out", default=str(ROOT / "metaseg" / "weights"), help="where the shipped weights go")
    p.add_argument("--which", choices=("last", "best"), default="last",
                   help="last (default: same step count for both models) or best (validation mIoU)")
    args = p.parse_args(argv)
    export(Path(args.runs).resolve(), Path(args.out), args.which)
    return 0


if __name__ == "__main__":
    sys.exit(main())
