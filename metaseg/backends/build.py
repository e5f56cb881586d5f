"""Build-or-reuse of verified graphs (:func:`ensure_graph`) and the sessions the predictor runs (:func:`load_session`)."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metaseg.backends.cache import (
    _atomic_write_bytes,
    _lock,
    _record_path,
    graph_path,
    model_key,
    read_record,
    user_cache_dir,
)
from metaseg.backends.export import EXPORT_RECIPE, ONNX_OPSET, export_fp32, prompt_tokens
from metaseg.backends.int8 import quantize_int8
from metaseg.backends.runtime import OrtModel
from metaseg.backends.selection import ONNX_BACKENDS
from metaseg.backends.tiles import tile_prompt
from metaseg.backends.verify import MIN_AGREEMENT, _passes, verify
from metaseg.checkpoints import file_sha256
from metaseg.errors import ConfigError, MetasegError

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger("metaseg.backends")


def ensure_graph(model: nn.Module, backend: str, checkpoint: Path | None = None,
                 meta: dict[str, Any] | None = None) -> tuple[Path, dict[str, Any]]:
    """The cached, verified graph of ``backend`` for ``model`` (built, verified and cached if needed).

    Returns:
        ``(graph path, verification record)``; ``record["verified"]`` says whether it passed.

    Raises:
        MetasegError: the export or the quantisation failed (one line).
    """
    import torch

    if backend not in ONNX_BACKENDS:
        raise ConfigError(f"no ONNX graph for backend {backend!r}")
    model = model.eval()
    path = graph_path(model, backend, checkpoint)
    record = read_record(path)
    if record is not None:
        return path, record
    with _lock(path):
        record = read_record(path)  # another process may have built it meanwhile
        if record is not None:
            return path, record
        start = time.perf_counter()
        uses_text = bool(getattr(model, "uses_text", False))
        meta = dict(meta or {})
        extra: dict[str, Any] = {}
        try:
            if backend == "onnx":
                tokens = prompt_tokens(model, tile_prompt(meta, "Cfa")) if uses_text else None
                _atomic_write_bytes(path, export_fp32(model, tokens))
            else:
                fp32_path, fp32_record = ensure_graph(model, "onnx", checkpoint, meta)
                if not fp32_record.get("verified"):
                    raise MetasegError("the fp32 ONNX graph failed its verification; no int8 graph is built from it")
                extra = quantize_int8(fp32_path, path, model, meta)
        except MetasegError:
            raise
        except Exception as exc:  # noqa: BLE001 - exporter/quantiser failures are many kinds
            raise MetasegError(f"cannot build the {backend} graph of {getattr(model.config, 'name', 'model')}: "
                               f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}") from exc
        session = OrtModel(path, threads=torch.get_num_threads())
        check = verify(session, model, meta)
        import onnxruntime as ort

        record = {
            "backend": backend, "model": str(getattr(model.config, "name", "")), "key": model_key(model, checkpoint),
            "checkpoint": None if checkpoint is None else str(checkpoint), "onnxruntime": ort.__version__,
            "torch": torch.__version__, "opset": ONNX_OPSET, "recipe": EXPORT_RECIPE,
            "sha256": file_sha256(path), "bytes": path.stat().st_size,
            "build_seconds": round(time.perf_counter() - start, 2),
            "verification": check, "min_agreement": MIN_AGREEMENT[backend],
            "verified": _passes(backend, check), **extra,
        }
        _atomic_write_bytes(_record_path(path), (json.dumps(record, indent=2) + "\n").encode())
        if path.parent == user_cache_dir():  # the shared cache stays under METASEG_ONNX_CACHE_MB
            from metaseg.cachebound import budget_bytes, trim

            trim(path.parent, budget_bytes("METASEG_ONNX_CACHE_MB", 2048), keep=[path, _record_path(path)])
        log.info("built %s (%s): agreement min %.4f, max |dlogit| %.3g, %.1fs", path.name, backend,
                 check["agreement_min"], check["max_abs_diff"], record["build_seconds"])
        return path, record



def load_session(model: nn.Module, backend: str, checkpoint: Path | None = None,
                 meta: dict[str, Any] | None = None) -> tuple[OrtModel, dict[str, Any]]:
    """A verified ONNX Runtime session for ``backend`` (graph built or rebuilt as needed).

    Raises:
        MetasegError: the graph cannot be built, or it failed its verification against PyTorch.
    """
    path, record = ensure_graph(model, backend, checkpoint, meta)
    try:
        session = OrtModel(path)
    except Exception as exc:  # noqa: BLE001 - a corrupt graph that still matched its hash: rebuild once
        log.warning("cached graph %s does not load (%s); rebuilding", path.name, type(exc).__name__)
        with contextlib.suppress(OSError):
            _record_path(path).unlink()
        path, record = ensure_graph(model, backend, checkpoint, meta)
        session = OrtModel(path)
    if not record.get("verified"):
        check = record.get("verification", {})
        raise MetasegError(
            f"the {backend} graph of {record.get('model')} disagrees with PyTorch on the example tiles "
            f"(agreement min {check.get('agreement_min', float('nan')):.4f}, mean "
            f"{check.get('agreement_mean', float('nan')):.4f}); use --backend torch"
        )
    return session, record
