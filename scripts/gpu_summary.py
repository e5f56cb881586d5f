"""Summary of a ``scripts/gpu_check.sh`` run: one JSON with every figure, one text table (stdlib only).

``python scripts/gpu_summary.py WORK_DIR DEST_DIR [--final]`` reads what the stages left in
``WORK_DIR`` (``stages.tsv``: one ``name rc seconds limit_s`` line per finished stage; ``NAME.json``
and ``NAME.log`` per stage; ``gpu.txt``) and writes ``DEST_DIR/summary.json`` and
``DEST_DIR/summary.txt``. gpu_check.sh runs it after every stage (so even a run killed from
outside leaves the figures of the stages that finished) and once more from its exit trap.

Figures (``summary.json``):

* ``train``: median optimiser-step time with the batch already loaded (``step_s``) and step end to
  step end with loading (``step_s_with_loading``), the matching images/s, CUDA peak memory,
  precision, validation mIoU (percent), checkpoint-writing seconds (outside the steps) and the
  approximate fraction of the bf16 dense peak (3 × forward FLOPs per image from bench ×
  images/s ÷ ``peak_tflops``: the usual forward + 2 × backward estimate);
* ``eval``: mIoU / OA / mF1 (percent), tiles, seconds, tiles/s including tile reading, the prompt
  source and hashes;
* ``bench``: forward time of both models of the pair, inference FPS (``tiles_per_s``,
  ``baseline_tiles_per_s``), achieved TFLOP/s and fraction of peak, peak memory, GPU name;
* ``stages``: per stage ``status`` (``ok``, ``failed``, ``timeout``, ``not run``), exit code,
  seconds, limit, and the last log lines of a stage that did not finish well.
"""

from __future__ import annotations

import json
import os
import sys
import time

STAGES = ("imports", "text_encoder", "synth", "train", "eval", "bench")


def _load(path: str):
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read().strip()
    except OSError:
        return None
    if not text:
        return None
    try:  # the stage prints one JSON object; take the last line that parses
        return json.loads(text)
    except ValueError:
        for line in reversed(text.splitlines()):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def _tail(path: str, n: int = 8) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return [ln.rstrip()[:300] for ln in fh.read().splitlines()[-n:]]
    except OSError:
        return []


def _stages(work: str) -> dict[str, dict]:
    out = {name: {"status": "not run"} for name in STAGES}
    try:
        with open(os.path.join(work, "stages.tsv"), encoding="utf-8") as fh:
            lines = [ln.split() for ln in fh if ln.strip()]
    except OSError:
        lines = []
    for parts in lines:
        if len(parts) < 4:
            continue
        name, rc, seconds, limit = parts[0], int(parts[1]), float(parts[2]), float(parts[3])
        status = "ok" if rc == 0 else ("timeout" if rc in (124, 137) else "failed")
        row = {"status": status, "rc": rc, "seconds": seconds, "limit_s": limit}
        if rc != 0:
            row["log_tail"] = _tail(os.path.join(work, f"{name}.log"))
        out[name] = row
    return out


def _machine(work: str) -> dict:
    info = _load(os.path.join(work, "imports.json")) or {}
    try:
        with open(os.path.join(work, "gpu.txt"), encoding="utf-8") as fh:
            rows = [ln.strip() for ln in fh if ln.strip()]
        if len(rows) >= 2:
            info["nvidia_smi"] = rows[1]
    except OSError:
        pass
    return info


def summarise(work: str, peak_tflops: float, t0: float | None = None, final: bool = False) -> dict:
    """Collect every figure of the stages found in ``work`` (see the module docstring)."""
    tr = _load(os.path.join(work, "train.json"))
    ev = _load(os.path.join(work, "eval.json"))
    be = _load(os.path.join(work, "bench.json"))
    sy = _load(os.path.join(work, "synth.json"))
    stages = _stages(work)
    out: dict = {"complete": all(s["status"] == "ok" for s in stages.values()), "final": final,
                 "wall_s": round(time.time() - t0, 1) if t0 else None, "peak_tflops": peak_tflops,
                 "units": {"miou": "percent", "memory": "MiB", "time": "seconds"},
                 "machine": _machine(work), "stages": stages}
    if sy:
        out["synth"] = {k: sy.get(k) for k in ("n", "size", "zones", "splits", "seconds", "tiles_per_minute")}
    if tr and "steps" in tr:
        t = {k: tr.get(k) for k in ("steps", "step_s", "step_s_with_loading", "images_per_s",
                                     "images_per_s_with_loading", "peak_mem_mb", "precision", "best_miou",
                                     "checkpoint_s", "seconds", "world_size")}
        if t["images_per_s"] is None and t["step_s"]:
            t["images_per_s"] = round(2 / t["step_s"], 3)
        t["val_miou"] = None if t["best_miou"] is None else round(float(t.pop("best_miou")), 2)
        t.pop("best_miou", None)
        g = ((be or {}).get("gflops_per_image") or {}).get("metasegnet")
        if g and t["images_per_s"] and peak_tflops:
            t["approx_fraction_of_bf16_peak"] = round(3 * g * t["images_per_s"] / 1e3 / peak_tflops, 4)
        out["train"] = t
    if ev and "miou" in ev:
        e = {k: ev.get(k) for k in ("miou", "oa", "mf1", "n_images", "seconds", "prompt_source", "prompt_hash",
                                     "train_prompt_hash", "units", "backend")}
        if ev.get("seconds"):
            e["tiles_per_s_with_loading"] = round(ev["n_images"] / ev["seconds"], 3)
        out["eval"] = e
    if be and "metasegnet_ms" in be:
        out["bench"] = {k: be.get(k) for k in ("pair", "size", "batch", "precision", "metasegnet_ms", "baseline_ms",
                                               "ratio", "tiles_per_s", "baseline_tiles_per_s", "gflops_per_image",
                                               "achieved_tflops", "mfu", "peak_mem_mb", "gpu", "device", "torch")}
    out["raw"] = {"train": tr, "eval": _without_per_class(ev), "bench": be, "synth": sy}
    return out


def _without_per_class(ev):
    if not isinstance(ev, dict):
        return ev
    return {k: v for k, v in ev.items() if k not in ("per_class", "with_background")} | (
        {"per_class_iou": {c: (v or {}).get("iou") for c, v in (ev.get("per_class") or {}).items()}}
        if ev.get("per_class") else {})


class _Fields(dict):
    """A summary section for :meth:`str.format_map`: a key it lacks reads as ``None``."""

    def __missing__(self, key: str) -> None:
        return None


#: One line per measured section of the summary (what :func:`text_lines` prints for it).
_SECTION_LINES = (
    ("train", "train  {steps} steps, median step {step_s} s ({images_per_s} img/s), {step_s_with_loading} s with "
              "loading ({images_per_s_with_loading} img/s), peak memory {peak_mem_mb} MiB, {precision}, val mIoU "
              "{val_miou} %, checkpoints {checkpoint_s} s, approx. fraction of bf16 peak {approx_fraction_of_bf16_peak}"),
    ("eval", "eval   mIoU {miou} % OA {oa} % on {n_images} tiles in {seconds} s ({tiles_per_s_with_loading} tiles/s "
             "with loading); prompts: {prompt_source}"),
    ("bench", "bench  {pair} {size}² batch {batch} {precision}: MetaSegNet {metasegnet_ms} ms/batch = {tiles_per_s} "
              "FPS, baseline {baseline_ms} ms = {baseline_tiles_per_s} FPS; {achieved_tflops} TFLOP/s = {mfu} of peak; "
              "peak memory {peak_mem_mb} MiB on {gpu_or_device}"),
)


def text_lines(s: dict) -> list[str]:
    lines = [f"gpu_check: {'complete' if s['complete'] else 'INCOMPLETE'}"
             f"{'' if s['final'] else ' (partial: written after a stage)'}, wall {s['wall_s']} s"]
    m = s.get("machine") or {}
    if m:
        lines.append(f"machine {m.get('nvidia_smi') or m.get('device')}; python {m.get('python')} torch "
                     f"{m.get('torch')} cuda {m.get('cuda')} bf16 {m.get('bf16')}")
    for name, st in s["stages"].items():
        lines.append(f"  stage {name:13s} {st['status']:8s} {st.get('seconds', '-')} s of {st.get('limit_s', '-')} s"
                     + (f"  rc {st['rc']}" if st.get("rc") else ""))
        for ln in st.get("log_tail", [])[-3:]:
            lines.append(f"      | {ln}")
    for key, template in _SECTION_LINES:
        if key in s:
            sec = s[key]
            lines.append(template.format_map(_Fields(sec, gpu_or_device=sec.get("gpu") or sec.get("device"))))
    return lines


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        sys.stderr.write("usage: python scripts/gpu_summary.py WORK_DIR DEST_DIR [--final]\n")
        return 2
    work, dest = argv[0], argv[1]
    peak = float(os.environ.get("PEAK_TFLOPS", "989"))
    t0 = float(os.environ["CHECK_T0"]) if os.environ.get("CHECK_T0") else None
    s = summarise(work, peak, t0, final="--final" in argv)
    os.makedirs(dest, exist_ok=True)
    for name, text in (("summary.json", json.dumps(s, indent=1, default=str)), ("summary.txt", "\n".join(text_lines(s)))):
        tmp = os.path.join(dest, f".{name}.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
        os.replace(tmp, os.path.join(dest, name))
    if "--final" in argv:
        print("\n".join(text_lines(s)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
