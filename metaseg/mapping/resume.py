"""What identifies a tile's mask, so ``--resume`` reuses exactly the masks that are still current.

A tile's fingerprint (:func:`fingerprint`) hashes its input (:func:`input_fingerprint`: size +
mtime for files, href + STAC version for URLs), the model (:func:`model_info`: the checkpoint's one
fingerprint, :func:`metaseg.checkpoints.checkpoint_identity`), the prompt and the inference
settings. A mask whose recorded fingerprint differs is predicted again; :func:`stale_masks_message`
says so in one line, because a folder written with another model — or by an older metaseg, whose
model fingerprint was path + size + mtime based — has only stale masks.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import TYPE_CHECKING

from metaseg.mapping.layout import is_url
from metaseg.mapping.sources import Source

if TYPE_CHECKING:
    from pathlib import Path

    from metaseg.mapping.tasks import MapSettings


def model_info(name: str | None, checkpoint: str | None) -> tuple[str, str | None, bool | None]:
    """(fingerprint of the weights, class set name, uses text) read without importing torch.

    The fingerprint is :func:`metaseg.checkpoints.checkpoint_identity`'s ``sha256`` (the bytes of
    the weights and metadata, wherever they lie); a hub id is fetched here once (the hub cache then
    serves local workers). Without ``checkpoint``, a class set or ``uses_text`` the shipped
    metadata does not record comes from variant ``name``'s registry config. Otherwise they are
    ``None`` when the metadata does not say (the caller then loads the model to find out).

    With a ``checkpoint``, ``name`` is not checked against the variant it records here (as before
    the one-fingerprint change): the workers' model load does that.

    Raises:
        CheckpointError / UnknownNameError: missing checkpoint, unknown variant.
    """
    from metaseg.checkpoints import checkpoint_identity

    identity = checkpoint_identity(None if checkpoint else name, checkpoint)
    class_set, uses_text = identity.class_set, identity.uses_text
    if (class_set is None or uses_text is None) and name and not checkpoint:
        from metaseg.models.registry import variant_config

        config = variant_config(name).to_dict()
        if class_set is None and config.get("class_set"):
            class_set = str(config["class_set"])
        if uses_text is None and config.get("uses_text") is not None:
            uses_text = bool(config["uses_text"])
    return identity.sha256, class_set, uses_text


def input_fingerprint(src: Source) -> str:
    """What identifies the content of an input: size + mtime for files, href + version for URLs."""
    if is_url(src.path):
        return f"{src.path}|{src.version or ''}"
    st = os.stat(src.path)
    return f"{os.path.realpath(src.path)}|{st.st_size}|{st.st_mtime_ns}"


def fingerprint(input_fp: str, model_fp: str, prompt: str | None, settings: MapSettings, backend: str) -> str:
    """sha256 of everything that determines a tile's mask (not the vector options: those are re-applied)."""
    payload = json.dumps({
        "input": input_fp, "model": model_fp, "prompt": prompt, "class_set": settings.class_set,
        "window": settings.window, "overlap": settings.overlap, "tta": settings.tta, "backend": backend,
    }, sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(payload.encode("utf-8", "surrogateescape")).hexdigest()


def stale_masks_message(stale: int, total: int, out: Path) -> str:
    """The one line ``--resume`` logs when earlier masks in ``out`` are predicted again."""
    return (f"warning: --resume: {stale} of {total} mask(s) in {out} were made with other inputs, prompts, "
            "settings or model weights and are predicted again (the folder may have been written with a "
            "different model or by an older version of metaseg)")
