"""Writing the taught checkpoint folder: ``model.safetensors``, ``config.json`` (checkpoint JSON
with a ``teach`` record) and ``README.md`` (model card), verified by loading it back."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from metaseg.errors import CheckpointError
from training.finetune.recipe import IGNORE, TeachTile
from training.finetune.samples import sha256_file


def _tile_record(t: TeachTile) -> dict[str, Any]:
    return {"image": str(t.image), "label": str(t.label), "image_sha256": sha256_file(t.image),
            "label_sha256": sha256_file(t.label), "width": int(t.target.shape[1]),
            "height": int(t.target.shape[0]), "labelled_pixels": t.labelled, "zone": t.zone,
            "label_ids": sorted(int(v) for v in np.unique(t.target) if v != IGNORE)}


def teach_meta(base_text, base_weights, base_meta, cs, tiles, n_steps, seconds, stopped, loss, recipe,
               head_init, flips, seed, device) -> dict[str, Any]:
    """The checkpoint JSON's extra keys of a taught model (its ``teach`` record included)."""
    prompts: dict[str, str] = {}
    for t in tiles:
        if t.prompt is not None:
            prompts.setdefault(t.zone or "generic", t.prompt)
    gsds = [t.gsd_m for t in tiles if isinstance(t.gsd_m, (int, float)) and t.gsd_m > 0]
    extra: dict[str, Any] = {
        "dataset": "taught",
        "model_variant": base_meta["config"].get("name"),
        "prompt_mode": "climate" if base_meta["config"].get("uses_text") else None,
        "train_prompts": prompts or None,
        "step": n_steps,
        "train_seconds": round(seconds, 2),
        "teach": {
            "base": base_text,
            "base_weights": base_weights.name,
            "base_sha256": sha256_file(base_weights),
            "base_class_set": base_meta.get("class_set"),
            "base_dataset": base_meta.get("dataset"),
            "class_set": cs.name,
            "head": head_init,
            "steps": n_steps,
            "seconds": round(seconds, 2),
            "stopped": stopped,
            "final_loss": None if loss is None else round(float(loss), 4),
            "flips_cached": flips,
            "seed": seed,
            "device": device,
            "recipe": recipe.to_dict(),
            "labelled_pixels": int(sum(t.labelled for t in tiles)),
            "tiles": [_tile_record(t) for t in tiles],
        },
    }
    if gsds:
        extra["gsd_range_m"] = [min(gsds), max(gsds)]
    return extra


def _write_folder(model: Any, out: Path, extra: dict[str, Any]) -> None:
    """model.safetensors + config.json, verified by loading."""
    from metaseg.checkpoints import EXPORT_CONFIG, load_checkpoint, save_checkpoint

    out.mkdir(parents=True, exist_ok=True)
    tmp_stem = out / ".teach_tmp"
    save_checkpoint(model, tmp_stem, extra=extra)
    os.replace(tmp_stem.with_suffix(".safetensors"), out / "model.safetensors")
    os.replace(tmp_stem.with_suffix(".json"), out / EXPORT_CONFIG)
    try:
        load_checkpoint(out)
    except CheckpointError as exc:  # a bug, not a user error: say so in one line
        raise CheckpointError(f"the taught checkpoint in {out} does not load back: {exc}") from None


def write_taught_folder(model: Any, out: Path, extra: dict[str, Any], seconds_now: Any) -> float:
    """Write and verify the folder, then the final seconds into ``config.json`` and the README.

    ``seconds_now()`` is the run's elapsed time; it is read after the weights are written so the
    recorded seconds include writing them. Returns those seconds (rounded to 0.01).
    """
    _write_folder(model, out, extra)
    seconds = round(seconds_now(), 2)
    extra["teach"]["seconds"] = seconds
    config = out / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text(encoding="utf-8")), "teach": extra["teach"]},
                                 indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "README.md").write_text(model_card(json.loads(config.read_text(encoding="utf-8"))), encoding="utf-8")
    return seconds


def _card_table(meta: dict[str, Any], teach: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
    kind = "MetaSegNet" if cfg.get("uses_text") else "vision-only baseline"
    return [f"# {cfg.get('name')} taught on {teach.get('tiles') and len(teach['tiles'])} tile(s)", "",
            f"{kind} fine-tuned with `python -m training.finetune` on the labelled tiles below, starting from "
            f"`{teach.get('base')}`.", "", "| | |", "|---|---|",
            f"| base checkpoint | `{teach.get('base')}` ({teach.get('base_weights')}, sha256 `{teach.get('base_sha256')}`) |",
            f"| base class set / data | {teach.get('base_class_set')} / {teach.get('base_dataset')} |",
            f"| class set | {meta.get('class_set')} ({meta.get('num_classes')} classes); classifier: {teach.get('head')} |",
            f"| never predicted (no labelled pixel) | {', '.join(teach.get('silenced_classes') or []) or '–'} |",
            f"| steps | {teach.get('steps')} (stopped: {teach.get('stopped')}, final loss {teach.get('final_loss')}) |",
            f"| seconds | {teach.get('seconds')} on {teach.get('device')} |",
            f"| labelled pixels | {teach.get('labelled_pixels')} |",
            f"| seed | {teach.get('seed')} |", ""]


def _card_tiles(teach: dict[str, Any], cs_name: Any) -> list[str]:
    lines = ["## Labelled tiles", "", "| image | label | labelled px | label ids | zone |", "|---|---|---|---|---|"]
    for t in teach.get("tiles") or []:
        lines.append(f"| `{Path(t['image']).name}` ({t['width']}×{t['height']}, sha256 {t['image_sha256'][:12]}…) | "
                     f"`{Path(t['label']).name}` (sha256 {t['label_sha256'][:12]}…) | {t['labelled_pixels']} | "
                     f"{', '.join(str(i) for i in t['label_ids'])} | {t.get('zone') or '–'} |")
    lines += ["", "Label ids are class indices of the class set (0-based, in its order: "
              + ", ".join(f"{i} {n}" for i, n in enumerate(_names(cs_name))) + ").", ""]
    return lines


def model_card(meta: dict[str, Any]) -> str:
    """README.md of a taught folder: what it was taught on, from what, how long."""
    cfg = meta.get("config", {})
    teach = meta.get("teach") or {}
    lines = ["---", "library_name: metaseg", "pipeline_tag: image-segmentation", "tags:",
             "- semantic-segmentation", "- remote-sensing", "- metasegnet", "- taught",
             "- vision-language" if cfg.get("uses_text") else "- vision-only", "---", ""]
    lines += _card_table(meta, teach, cfg) + _card_tiles(teach, meta.get("class_set"))
    if meta.get("train_prompts"):
        lines += ["## Prompts seen while teaching", ""]
        lines += [f"- **{z}**: {p}" for z, p in meta["train_prompts"].items()] + [""]
    lines += ["## Recipe", "", "```json", json.dumps(teach.get("recipe"), indent=2), "```", "",
              "## Use", "", "```bash",
              f"python -m metaseg predict tile.tif --model {cfg.get('name')} --checkpoint DIR --out mask.tif", "```", "",
              "## Limits", "",
              "- Taught on the few tiles above only: expect it to work on imagery like them (same sensor, "
              "resolution, region, season), not elsewhere.",
              "- No held-out score is recorded here; measure one with `training.evaluate --checkpoint DIR` or the "
              "studio's Review tab on a labelled tile that was not used for teaching."]
    if cfg.get("uses_text"):
        lines.append(f"- Text encoder `{cfg.get('text_encoder')}` is frozen and not inside model.safetensors.")
    return "\n".join(lines) + "\n"


def _names(cs_name: Any) -> tuple[str, ...]:
    from metaseg.classes import CLASS_SETS

    cs = CLASS_SETS.get(str(cs_name))
    return cs.names if cs is not None else ()
