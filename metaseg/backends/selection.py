"""Backend names: :data:`BACKENDS`, :func:`check_backend` and :func:`parse_backends` (``--backend``).

``auto`` is resolved by :class:`metaseg.inference.Predictor` (onnx on CPU when its verified graph can be had,
else torch with a logged reason; always torch on CUDA).
"""

from __future__ import annotations

from metaseg.errors import ConfigError

BACKENDS = ("torch", "onnx", "onnx-int8", "auto")
ONNX_BACKENDS = ("onnx", "onnx-int8")


def check_backend(name: str | None) -> str:
    """Normalise a backend name (``None`` → ``torch``).

    Raises:
        ConfigError: not one of :data:`BACKENDS`.
    """
    value = "torch" if name is None else str(name).strip().lower()
    if value not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; valid: {', '.join(BACKENDS)}")
    return value


def parse_backends(text: str) -> tuple[str, ...]:
    """``"torch,onnx,onnx-int8"`` → a tuple of concrete backends (``auto`` not allowed), torch first."""
    names = [check_backend(part) for part in str(text).split(",") if part.strip()]
    if not names:
        raise ConfigError("--backend needs at least one backend (torch, onnx, onnx-int8)")
    if "auto" in names:
        raise ConfigError("bench times concrete backends: use torch, onnx and/or onnx-int8, not auto")
    out = ["torch"] + [n for n in dict.fromkeys(names) if n != "torch"]
    return tuple(out)
