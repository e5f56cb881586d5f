"""The graph cache: where graphs live, their key, records, atomic writes and the build lock."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metaseg.backends.export import EXPORT_RECIPE, ONNX_OPSET
from metaseg.backends.int8 import int8_weight_bits
from metaseg.checkpoints import WEIGHTS_DIR as _SHIPPED_WEIGHTS
from metaseg.checkpoints import checkpoint_identity, file_sha256

if TYPE_CHECKING:
    from torch import nn


def user_cache_dir() -> Path:
    """``$METASEG_CACHE_DIR/onnx`` (or ``$METASEG_CACHE/onnx``), else ``~/.cache/metaseg/onnx``."""
    root = (os.environ.get("METASEG_CACHE_DIR") or os.environ.get("METASEG_CACHE")
            or str(Path("~/.cache/metaseg").expanduser()))
    return Path(root).expanduser() / "onnx"


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=folder, prefix=".metaseg-write-test-")
    except OSError:
        return False
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(name)
    return True



def model_key(model: nn.Module, checkpoint: Path | None = None) -> str:
    """Key of a model's cached graphs: the export recipe plus the model's one fingerprint.

    With a checkpoint that fingerprint is :func:`metaseg.checkpoints.checkpoint_identity`'s
    ``sha256`` (weights + JSON bytes, the same identity map resumes, sweeps and the app use); only
    a model without a checkpoint falls back to a hash of its config and state dict (text encoder
    excluded: it stays in PyTorch). Keys made before this choice (raw file hashes) differ, so old
    cached graphs are simply not reused.

    Raises:
        CheckpointError: ``checkpoint`` is not a readable checkpoint (weights + JSON).
    """
    import torch

    h = hashlib.sha256(f"recipe{EXPORT_RECIPE}/opset{ONNX_OPSET}".encode())
    if checkpoint is not None:
        h.update(checkpoint_identity(None, checkpoint).sha256.encode())
    else:
        config = getattr(model, "config", None)
        h.update(json.dumps(config.to_dict() if hasattr(config, "to_dict") else repr(config),
                            sort_keys=True, default=str).encode())
        for name, tensor in model.state_dict().items():
            if name.startswith("text_encoder."):
                continue
            h.update(name.encode())
            h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]

def graph_path(model: nn.Module, backend: str, checkpoint: Path | None = None) -> Path:
    """Where the graph of ``backend`` for this model lives: next to the checkpoint if writable, in
    :func:`user_cache_dir` for the shipped weights (the package folder stays as shipped) and for a
    model without a checkpoint."""
    import onnxruntime as ort

    stem = Path(checkpoint).with_suffix("").name if checkpoint is not None else str(
        getattr(getattr(model, "config", None), "name", "model"))
    folder = Path(checkpoint).parent if checkpoint is not None else None
    if folder is None or folder.resolve() == _SHIPPED_WEIGHTS.resolve() or not _writable(folder):
        folder = user_cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
    kind = f"{backend}-w{int8_weight_bits()}" if backend == "onnx-int8" else backend
    return folder / f"{stem}.{kind}.{model_key(model, checkpoint)}.ort{ort.__version__}.onnx"



def _record_path(graph: Path) -> Path:
    return graph.with_name(graph.name + ".json")


def read_record(graph: Path) -> dict[str, Any] | None:
    """The verification record of a cached graph, or ``None`` when missing, unreadable or stale."""
    rec_path = _record_path(graph)
    if not graph.is_file() or not rec_path.is_file():
        return None
    try:
        record = json.loads(rec_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("sha256") != file_sha256(graph):
        return None
    return record


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    lock = path.with_name(path.name + ".lock")
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    with open(lock, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
