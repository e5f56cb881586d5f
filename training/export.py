"""``python -m training.export --checkpoint CKPT --out DIR [--push ORG/NAME]``: a hub-style model folder.

What ``DIR`` holds afterwards::

    model.safetensors   the checkpoint's weights (unchanged, or float16 with --half)
    config.json         the checkpoint JSON (model config, class set, training metadata) + "export"
    README.md           a model card filled from the run: dataset, model/encoder start, prompt
                        mode and prompts, training config and time, validation metrics per class
                        (plus any ``training.evaluate --json`` reports passed with --eval-json),
                        and the limits that follow from the run

Every loader of the project reads the folder through :func:`metaseg.checkpoints.load_checkpoint`:
``python -m metaseg predict TILE --checkpoint DIR``, ``training.evaluate --checkpoint DIR``, the
app's Models tab, and, once pushed, the hub id ``ORG/NAME``. Nothing is pickled.

``--push ORG/NAME`` uploads the folder with ``huggingface_hub`` (``create_repo`` + ``upload_folder``;
token from ``HF_TOKEN`` or ``hf auth login``). Offline (``HF_HUB_OFFLINE`` set, or the hub
unreachable) it stops with one line on stderr and exit 2; the folder is still written.

``--json`` prints ``{"out", "files", "pushed", "repo_id", "url"}``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from metaseg.cli import run_cli
from metaseg.errors import ConfigError, MetasegError

log = logging.getLogger(__name__)

CARD = "README.md"


# ----------------------------------------------------------------------------- model card
def _pct(v: Any) -> str:
    return "–" if v is None else f"{100.0 * float(v):.2f}"


def _pct_already(v: Any) -> str:
    return "–" if v is None else f"{float(v):.2f}"


def _per_class_table(per_class: dict[str, dict[str, Any]], fmt) -> list[str]:
    lines = ["| class | IoU | F1 | precision | recall |", "|---|---|---|---|---|"]
    for name, vals in per_class.items():
        lines.append(f"| {name} | {fmt(vals.get('iou'))} | {fmt(vals.get('f1'))} | {fmt(vals.get('precision'))} "
                     f"| {fmt(vals.get('recall'))} |")
    return lines


def _gsd_text(gsd: tuple[float, float]) -> str:
    return f"{gsd[0]:g}" if gsd[0] == gsd[1] else f"{gsd[0]:g}–{gsd[1]:g}"


def limits(meta: dict[str, Any]) -> list[str]:
    """What this model is not, derived from its own metadata."""
    cfg = meta.get("config", {})
    train_cfg = meta.get("train_config") or {}
    dataset = meta.get("dataset") or "an unrecorded dataset"
    from metaseg.checkpoints import gsd_range_m

    gsd = gsd_range_m(meta)
    res = f" (trained at {_gsd_text(gsd)} m/px)" if gsd is not None else ""
    out = [f"Trained on {dataset} only, for the {meta.get('class_set')} classes; on imagery of another sensor, "
           f"resolution{res} or region expect lower accuracy (other class sets need `training.evaluate --class-map`)."]
    start = meta.get("encoder_start", cfg.get("pretrained"))
    if start == "none":
        out.append("The image encoder started from random weights (`pretrained=none`), not ImageNet: "
                   "the paper's numbers assume ImageNet-initialised Swin-B.")
    if dataset == "synthearth":
        out.append("SynthEarth is procedural: this model demonstrates the pipeline, it is not a land-cover "
                   "model for real imagery.")
    if cfg.get("uses_text"):
        out.append(f"Text encoder `{cfg.get('text_encoder')}` is frozen and must be available where the model "
                   "is loaded (it is not inside model.safetensors).")
        if cfg.get("text_encoder") == "minilm" and cfg.get("encoder", "").startswith("swin_base"):
            out.append("Trained with the offline MiniLM text encoder, not the paper's BERT-base.")
        signal = meta.get("itm_signal") or ""
        if signal.startswith(("matching only", "none")):
            out.append(f"L_itm: {signal}. The prompt cannot carry information that differs between tiles.")
    if cfg.get("text_prior_fusion") is False:
        out.append("Ablation variant (Table IV 'Baseline+Alignment'): no text-prior fusion.")
    if train_cfg.get("max_steps") or train_cfg.get("time_budget_minutes"):
        out.append(f"Short run: {meta.get('step')} optimiser steps (max_steps={train_cfg.get('max_steps')}, "
                   f"time budget={train_cfg.get('time_budget_minutes')} min).")
    if train_cfg.get("max_val_samples"):
        out.append(f"Validation metrics cover the first {train_cfg['max_val_samples']} validation tiles only.")
    if meta.get("class_set") == "openearthmap":
        out.append("OpenEarthMap scores here are over the 8 land-cover classes (raw label 0 ignored); the paper's "
                   "Table I averages 9 columns incl. Background (`training.evaluate --score-background`).")
    return out


def model_card(meta: dict[str, Any], repo_id: str | None = None, reports: list[dict[str, Any]] | None = None) -> str:
    """The README.md text of an exported checkpoint (YAML front matter + Markdown)."""
    cfg = meta.get("config", {})
    train_cfg = meta.get("train_config") or {}
    name = cfg.get("name", "model")
    dataset = meta.get("dataset")
    tags = ["semantic-segmentation", "remote-sensing", "metasegnet",
            "vision-language" if cfg.get("uses_text") else "vision-only"]
    front = ["---", "library_name: metaseg", "pipeline_tag: image-segmentation", "tags:"]
    front += [f"- {t}" for t in tags]
    if dataset:
        front += ["datasets:", f"- {dataset}"]
    front += ["metrics:", "- mean_iou", "---", ""]
    kind = "MetaSegNet" if cfg.get("uses_text") else "vision-only baseline"
    if cfg.get("text_prior_fusion") is False:
        kind = "MetaSegNet without text-prior fusion (Table IV Baseline+Alignment)"
    seconds = meta.get("train_seconds")
    rows = [
        ("variant", f"`{name}` ({kind})"),
        ("dataset / class set", f"{dataset} / {meta.get('class_set')} ({meta.get('num_classes')} classes)"),
        ("image encoder", f"`{cfg.get('encoder')}`, start: `{meta.get('encoder_start', cfg.get('pretrained'))}`"),
        ("text encoder", f"`{cfg.get('text_encoder')}` (frozen, {cfg.get('max_tokens')} tokens)"
         if cfg.get("uses_text") else "none"),
        ("prompt mode", f"`{meta.get('prompt_mode')}`"),
        ("epochs / steps", f"{(meta.get('epoch') or 0) + 1} / {meta.get('step')}"),
        ("training time", f"{seconds / 3600:.2f} h ({seconds:.0f} s)" if isinstance(seconds, (int, float)) else "–"),
        ("precision", meta.get("precision", "–")),
        ("lr rule", json.dumps(meta.get("lr_rule")) if meta.get("lr_rule") else "–"),
        ("L_itm", meta.get("itm_signal", "–")),
        ("weights", f"{meta.get('weights_dtype')} safetensors"),
    ]
    teach = meta.get("teach") or {}
    if teach:  # a training.finetune folder re-exported: keep its provenance on the card
        rows.append(("taught", f"`python -m training.finetune` from `{teach.get('base')}` (sha256 "
                               f"`{teach.get('base_sha256')}`) on {len(teach.get('tiles') or [])} tile(s), "
                               f"{teach.get('labelled_pixels')} labelled px, {teach.get('steps')} steps, "
                               f"{teach.get('seconds')} s"))
    from metaseg.checkpoints import gsd_range_m

    gsd = gsd_range_m(meta)
    if gsd is not None:
        rows.insert(2, ("ground sample distance trained on", f"{_gsd_text(gsd)} m/px"))
    lines = front + [f"# {repo_id or name}", "",
                     f"{kind} for semantic segmentation of remote-sensing tiles, trained with MetaSegNet "
                     "Studio (`python -m training.train`) and exported by `python -m training.export`.", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    lines += _metrics_section(meta, train_cfg, reports)
    prompts = meta.get("train_prompts") or {}
    if cfg.get("uses_text") and prompts:
        lines += ["## Prompts seen in training", ""]
        for zone, text in prompts.items():
            lines += [f"- **{zone}**: {text}"]
        lines += [""]
    lines += ["## Use", "", "```bash",
              f"python -m metaseg predict tile.tif --model {name} --checkpoint {repo_id or 'DIR'} --out mask.tif",
              "```", "", "```python", "from metaseg.checkpoints import load_checkpoint",
              f"model, meta = load_checkpoint({(repo_id or 'DIR')!r})", "```", "",
              "## Limits", ""]
    lines += [f"- {item}" for item in limits(meta)]
    if train_cfg:
        lines += ["", "## Training configuration", "", "```json", json.dumps(train_cfg, indent=2), "```"]
    return "\n".join(lines) + "\n"


def _metrics_section(meta: dict[str, Any], train_cfg: dict[str, Any],
                     reports: list[dict[str, Any]] | None) -> list[str]:
    """The card's "Metrics" section: validation at the checkpoint's epoch, then each evaluate report."""
    lines = ["", "## Metrics", ""]
    val = meta.get("val") or {}
    proto = meta.get("val_protocol") or {}
    vfmt = _pct_already if meta.get("units") == "percent" else _pct  # checkpoints before issue 23: fractions
    if val:
        lines += [f"Validation split `{proto.get('split', train_cfg.get('split_val'))}` at the checkpoint's epoch "
                  f"(protocol of `training.evaluate`: native tile size, flip TTA {'on' if proto.get('tta') else 'off'}), "
                  "percent:", "",
                  f"mIoU **{vfmt(val.get('miou'))}**, OA {vfmt(val.get('oa'))}, mF1 {vfmt(val.get('mf1'))}", ""]
        if val.get("per_class"):
            lines += _per_class_table(val["per_class"], vfmt) + [""]
    else:
        lines += ["No validation metrics were recorded for this checkpoint.", ""]
    for rep in reports or []:
        lines += [f"`training.evaluate` on {rep.get('dataset')}/{rep.get('split')} ({rep.get('n_images')} tiles, "
                  f"prompt mode `{rep.get('prompt_mode')}`, TTA {'on' if rep.get('tta') else 'off'}), percent:", "",
                  f"mIoU **{_pct_already(rep.get('miou'))}**, OA {_pct_already(rep.get('oa'))}, "
                  f"mF1 {_pct_already(rep.get('mf1'))}", ""]
        lines += _per_class_table(rep.get("per_class") or {}, _pct_already) + [""]
        bg = rep.get("with_background")
        if bg:
            lines += [f"With Background as a 9th class (paper Table I convention): mIoU {_pct_already(bg.get('miou'))}.",
                      ""]
    return lines


# ----------------------------------------------------------------------------- export / push
def export_checkpoint(checkpoint: str | Path, out: str | Path, *, half: bool = False,
                      eval_reports: list[dict[str, Any]] | None = None, repo_id: str | None = None,
                      verify: bool = True) -> dict[str, Any]:
    """Write the hub-style folder; returns ``{"out", "files"}``.

    Args:
        checkpoint: anything :func:`metaseg.checkpoints.load_checkpoint` accepts.
        out: the folder to write (created; existing export files are replaced).
        half: store floating-point tensors as float16.
        eval_reports: ``training.evaluate --json`` objects to add to the model card.
        repo_id: the hub id the card should name (``--push``).
        verify: load the written folder back (catches a weights/config mismatch before publishing).
    """
    from metaseg.checkpoints import EXPORT_CONFIG, EXPORT_WEIGHTS, read_checkpoint_meta, resolve_checkpoint

    weights, meta_path = resolve_checkpoint(checkpoint)
    meta = read_checkpoint_meta(meta_path)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    target = out / EXPORT_WEIGHTS
    if half:
        import torch
        from safetensors.torch import load_file, save_file

        state = {k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous()
                 for k, v in load_file(str(weights)).items()}
        save_file(state, str(target), metadata={"format": "pt", "metaseg_format_version": str(meta["format_version"])})
        meta["weights_dtype"] = "float16"
    elif weights.resolve() != target.resolve():
        shutil.copyfile(weights, target)
    meta["export"] = {"source": str(checkpoint), "exported_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                      "repo_id": repo_id}
    (out / EXPORT_CONFIG).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / CARD).write_text(model_card(meta, repo_id, eval_reports), encoding="utf-8")
    if verify:
        from metaseg.checkpoints import load_checkpoint

        load_checkpoint(out)
    return {"out": str(out), "files": sorted(p.name for p in out.iterdir() if p.is_file())}


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def push_folder(folder: str | Path, repo_id: str, *, private: bool = False) -> str:
    """Upload an exported folder to the hub with ``huggingface_hub``; returns the repo URL.

    Raises:
        MetasegError: offline, no permission, bad id, ... (one line).
    """
    import re

    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", repo_id):
        raise ConfigError(f"--push needs ORG/NAME, got {repo_id!r}")
    if _offline():
        raise MetasegError(f"cannot push to {repo_id}: HF_HUB_OFFLINE is set (the folder {folder} is written; "
                           "push it later from a machine with network)")
    from metaseg.models.image_encoders import _hub_reachable

    if not _hub_reachable():
        raise MetasegError(f"cannot push to {repo_id}: the Hugging Face hub is unreachable (offline?); the folder "
                           f"{folder} is written, push it later from a machine with network")
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        api.create_repo(repo_id, exist_ok=True, private=private)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder),
                                 commit_message="Upload MetaSegNet checkpoint (training.export)")
    except Exception as exc:  # noqa: BLE001 - network, auth, quota: all one line for the user
        reason = " ".join(str(exc).split())[:200]
        raise MetasegError(f"cannot push to {repo_id}: {type(exc).__name__}: {reason} (the folder {folder} is "
                           "written; check network and HF_TOKEN, then rerun with --push)") from None
    return str(getattr(info, "repo_url", None) or f"https://huggingface.co/{repo_id}")


# ----------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.export",
                                description="Export a checkpoint as a hub-style folder (and push it).")
    p.add_argument("--checkpoint", required=True, help="checkpoint (.safetensors/.json path, stem, folder or hub id)")
    p.add_argument("--out", required=True, help="folder to write (model.safetensors, config.json, README.md)")
    p.add_argument("--push", metavar="ORG/NAME", help="upload the folder to this Hugging Face repo")
    p.add_argument("--private", action="store_true", help="create the hub repo as private")
    p.add_argument("--half", action="store_true", help="store weights as float16 (half the size)")
    p.add_argument("--eval-json", action="append", default=[], metavar="FILE",
                   help="a `training.evaluate --json` output to add to the model card (repeatable)")
    p.add_argument("--no-verify", action="store_true", help="do not load the folder back after writing it")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run_cli(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    reports = []
    for path in args.eval_json:
        try:
            reports.append(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"--eval-json {path}: {exc}") from None
    result = export_checkpoint(args.checkpoint, args.out, half=args.half, eval_reports=reports,
                               repo_id=args.push, verify=not args.no_verify)
    result.update(pushed=False, repo_id=args.push, url=None)
    if args.push:
        result["url"] = push_folder(args.out, args.push, private=args.private)
        result["pushed"] = True
    if args.json:
        print(json.dumps(result))
    else:
        print(f"exported to {result['out']} ({', '.join(result['files'])})"
              + (f"; pushed to {result['url']}" if result["pushed"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
