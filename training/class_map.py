"""Class maps: score a checkpoint of one class set on a dataset of another (zero-shot, paper
Table VI). Shipped maps live in ``training/class_maps/``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metaseg.errors import ConfigError

CLASS_MAP_DIR = Path(__file__).resolve().parent / "class_maps"


def load_class_map(path: str | Path) -> dict[str, Any]:
    """Read a class-map file (JSON or YAML).

    Accepted forms: a flat ``{source class: target class | null}`` mapping, or
    ``{"source": set, "target": set, "map": {...}}`` (``source``/``target`` optional, checked
    when present). A bare name such as ``openearthmap_to_loveda`` refers to a shipped map.

    Returns:
        ``{"source": str | None, "target": str | None, "map": {str: str | None}, "path": str}``.
    """
    p = Path(path)
    if not p.exists() and not p.suffix and (CLASS_MAP_DIR / f"{p.name}.json").is_file():
        p = CLASS_MAP_DIR / f"{p.name}.json"
    if not p.is_file():
        raise ConfigError(f"class map {path} not found")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - any parse error is a user error here
        raise ConfigError(f"class map {p} is not valid {p.suffix.lstrip('.') or 'JSON'}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"class map {p} must be a mapping of class names")
    if isinstance(data.get("map"), dict):
        mapping = data["map"]
    else:  # flat form
        mapping = {k: v for k, v in data.items() if k not in ("source", "target", "note")}
    for k, v in mapping.items():
        if not isinstance(k, str) or not (v is None or isinstance(v, str)):
            raise ConfigError(
                f"class map {p}: entries must be 'class name': 'class name' or null, got {k!r}: {v!r}"
            )
    return {
        "source": data.get("source"),
        "target": data.get("target"),
        "map": dict(mapping),
        "path": str(p),
    }


def class_map_lut(
    class_map: dict[str, Any],
    source_names: Sequence[str],
    target_names: Sequence[str],
    source_set: str | None = None,
    target_set: str | None = None,
) -> np.ndarray:
    """Lookup table ``(256,)`` uint8: checkpoint class index → dataset class index (255 = unmapped).

    Names are matched case-insensitively. Raises ``ConfigError`` for unknown names or when the
    map's ``source``/``target`` contradict the checkpoint's / dataset's class set.
    """
    if class_map.get("source") and source_set and class_map["source"] != source_set:
        raise ConfigError(
            f"class map {class_map.get('path')} is for {class_map['source']} checkpoints, "
            f"this checkpoint predicts {source_set}"
        )
    if class_map.get("target") and target_set and class_map["target"] != target_set:
        raise ConfigError(
            f"class map {class_map.get('path')} targets {class_map['target']}, the dataset uses {target_set}"
        )
    src = {n.lower(): i for i, n in enumerate(source_names)}
    dst = {n.lower(): i for i, n in enumerate(target_names)}
    lut = np.full(256, 255, dtype=np.uint8)
    for s, t in class_map["map"].items():
        if s.lower() not in src:
            raise ConfigError(f"class map: {s!r} is not a checkpoint class; valid: {', '.join(source_names)}")
        if t is None:
            continue
        if t.lower() not in dst:
            raise ConfigError(f"class map: {t!r} is not a dataset class; valid: {', '.join(target_names)}")
        lut[src[s.lower()]] = dst[t.lower()]
    if not (lut != 255).any():
        raise ConfigError(f"class map {class_map.get('path')} maps no class")
    return lut
