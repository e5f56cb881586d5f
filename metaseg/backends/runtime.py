"""The ONNX Runtime CPU session of an exported image path (:class:`OrtModel`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from metaseg.errors import MetasegError


class OrtModel:
    """An ONNX Runtime CPU session of an exported image path.

    Args:
        path: the ``.onnx`` graph.
        threads: intra-op threads (the predictor passes ``torch.get_num_threads()``).
    """

    def __init__(self, path: Path, threads: int | None = None):
        import onnxruntime as ort
        import torch

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # No busy-waiting between runs: the app and the bench keep several sessions (MetaSegNet,
        # baseline, fp32 and int8) plus torch's own threads in one process, and a session whose
        # pool spins after its run steals the cores from the next one. Measured on 2 cores, four
        # baseline sessions interleaved: 86-107 ms per 512² run spinning, 60-78 ms without.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = Path(path)
        self.threads = options.intra_op_num_threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    @property
    def uses_text(self) -> bool:
        return "text_tokens" in self.input_names

    def run(self, images: np.ndarray, tokens: np.ndarray | None = None) -> np.ndarray:
        """Logits B×K×H×W float32 of B×3×H×W float32 images in [0, 1] (and B×L×C tokens)."""
        feed = {"images": np.ascontiguousarray(images, dtype=np.float32)}
        if self.uses_text:
            if tokens is None:
                raise MetasegError("this ONNX graph needs text tokens (MetaSegNet)")
            feed["text_tokens"] = np.ascontiguousarray(tokens, dtype=np.float32)
        return self.session.run(None, feed)[0]
