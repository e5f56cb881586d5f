"""Rank/world information of a run and the few collective operations the loop needs."""

from __future__ import annotations

import os


class Dist:
    """Rank/world info; initialises the process group when ``WORLD_SIZE > 1``.

    NCCL on CUDA, gloo on CPU. With one process every collective is a no-op, so the loop calls
    them unconditionally.
    """

    def __init__(self, device_kind: str) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(self.world)))
        self.enabled = self.world > 1
        if self.enabled:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def all_reduce_sum(self, tensor):
        if self.enabled:
            import torch.distributed as dist

            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def close(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def is_main_process() -> bool:
    """Rank 0 (or a single process), read from ``RANK`` before any process group exists."""
    return int(os.environ.get("RANK", "0")) == 0
