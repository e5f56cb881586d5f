"""``python -m metaseg info``: list model variants or count a model's parameters.

* ``info --list`` prints the variant names, one per line (torch is not imported).
* ``info --model NAME [--checkpoint PATH] [--json]`` builds the model without downloading
  anything (random Swin, package Lite0 weights; ``HF_HUB_OFFLINE=1`` unless the caller set it, so
  ``bert-base-uncased`` is used only when already in the local Hugging Face cache, otherwise the
  MiniLM fallback with a warning; the JSON's ``text_encoder`` says which) and reports ``total_params``, ``trainable_params``,
  ``frozen_params``, ``components`` (per component ``{"total", "trainable"}``), ``input_size``
  and ``class_set``. Swin-B MetaSegNets add ``paper_comparison``: the paper reports 399.7 M
  parameters (about a quarter trainable) where ``metasegnet_swin_b`` has 201.5 M (46 %); the block
  gives this model's totals with a frozen BERT-base and BERT-large, counted from their
  configurations, the BERT depth that would reach 399.7 M, and the explanation
  (:mod:`metaseg.models.param_count`).
"""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("info", help="list model variants or show a model's parameter counts")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--list", action="store_true", help="print variant names, one per line")
    group.add_argument("--model", metavar="NAME", help="variant name (see --list)")
    parser.add_argument("--checkpoint", metavar="PATH", help="checkpoint (.safetensors/.json/stem or org/name)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)
    return parser


def model_info(model: Any) -> dict[str, Any]:
    """Parameter counts of a SegModel, split by component."""
    parts = {"image_encoder": model.image_encoder, "text_encoder": model.text_encoder,
             "decoder": model.decoder, "neck": model.neck, "head": model.head}
    components = {}
    for key, module in parts.items():
        params = list(module.parameters()) if module is not None else []
        components[key] = {"total": sum(p.numel() for p in params),
                           "trainable": sum(p.numel() for p in params if p.requires_grad)}
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    cfg = model.config
    extra = {}
    if str(cfg.encoder).startswith("swin_base") and model.uses_text:
        from metaseg.models.param_count import paper_comparison

        extra["paper_comparison"] = paper_comparison(model)
    return {
        "model": cfg.name,
        "uses_text": bool(model.uses_text),
        "encoder": cfg.encoder,
        "text_encoder": cfg.text_encoder if model.uses_text else None,
        "total_params": total,
        "trainable_params": trainable,
        "frozen_params": total - trainable,
        "components": components,
        "input_size": [cfg.image_size, cfg.image_size],
        "class_set": cfg.class_set,
        "num_classes": cfg.num_classes,
        **extra,
    }


def run(args: argparse.Namespace) -> int:
    import os

    from metaseg.cli import print_json
    from metaseg.models.registry import list_variants, variant_config

    if args.list:
        for name in list_variants():
            print(name)
        return 0
    variant_config(args.model)  # unknown name -> UnknownNameError (exit 2) before importing torch
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # counting parameters must not download weights
    if args.checkpoint:
        from metaseg.checkpoints import load_checkpoint

        model, _meta = load_checkpoint(args.checkpoint, expected_name=args.model)
    else:
        from metaseg.models.registry import create_model

        model = create_model(args.model)
    info = model_info(model)
    if args.json:
        print_json(info)
    else:
        print(f"{info['model']}: {info['total_params'] / 1e6:.1f}M parameters "
              f"({info['trainable_params'] / 1e6:.1f}M trainable, {info['frozen_params'] / 1e6:.1f}M frozen)")
        for key, c in info["components"].items():
            print(f"  {key:14s} {c['total'] / 1e6:8.2f}M  ({c['trainable'] / 1e6:.2f}M trainable)")
        print(f"  input {info['input_size'][0]}x{info['input_size'][1]}, class set {info['class_set']} "
              f"({info['num_classes']} classes)")
        if info.get("paper_comparison"):
            print(f"  paper: 399.7M parameters, about a quarter trainable; {info['paper_comparison']['explanation']}")
    return 0
