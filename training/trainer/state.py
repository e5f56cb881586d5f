"""Everything a run keeps between epochs and across a resume, with no pickle anywhere.

``last_optim.safetensors`` holds the AdamW moments (param groups in its JSON metadata);
``last_state.json`` the epoch, schedule position, early-stopping counters and RNG states. Seeds:
model init uses ``seed`` on every rank; the data draws use :func:`loader_seed` /
:func:`data_seed`, which differ per rank (rank 0 keeps the single-process values).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Progress:
    """Counters of one run: the first five are what ``last_state.json`` restores on resume."""

    start_epoch: int = 0
    global_step: int = 0
    best_miou: float = -1.0
    best_epoch: int = -1
    bad_evals: int = 0
    total_steps: int = 0
    out_of_time: bool = False
    stopped_early: bool = False
    run_steps: int = 0  # steps of this process's run (resumed steps not counted): time-budget probe
    probe_t0: float | None = None
    step_times: list[float] = field(default_factory=list)  # wall s per optimiser step
    cycle_times: list[float] = field(default_factory=list)  # the same plus waiting for the batch
    checkpoint_s: float = 0.0  # wall s spent writing checkpoints (between epochs, outside the steps)
    last_write: float = 0.0
    pending_best: tuple[Any, dict] | None = None  # (Snapshot, metadata) not yet written as best.*


def save_optimizer(optimizer, path: Path) -> None:
    """AdamW state → safetensors (tensors) + the param groups inside its JSON metadata."""
    from safetensors.torch import save_file

    sd = optimizer.state_dict()
    tensors = {}
    for pid, st in sd["state"].items():
        for key, value in st.items():
            tensors[f"state.{pid}.{key}"] = value.detach().cpu().contiguous()
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    save_file(tensors, str(path), metadata={"param_groups": json.dumps(groups)})


def load_optimizer(optimizer, path: Path) -> None:
    import torch
    from safetensors import safe_open

    state: dict[int, dict[str, Any]] = {}
    with safe_open(str(path), framework="pt") as f:
        groups = json.loads(f.metadata()["param_groups"])
        for key in f.keys():
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = f.get_tensor(key)
    for g in groups:
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
    device = next((p.device for g in optimizer.param_groups for p in g["params"]), torch.device("cpu"))
    for st in state.values():
        for k, v in st.items():
            if k != "step":
                st[k] = v.to(device)
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def rng_to_list(t) -> list[int]:
    return [int(x) for x in t.tolist()]


#: Offset between the data seeds of two DDP ranks (rank 0 keeps the single-process seeds).
RANK_SEED_STRIDE = 1_000_003


def loader_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """Seed of rank ``rank``'s DataLoader generator in ``epoch``.

    The generator draws the shuffle order (single process) and the base seeds of the loader's
    worker processes, which draw the random flips; every rank gets its own, so two ranks never
    draw the same flips. Rank 0 gets the single-process value, so a 1-process run is unchanged.
    """
    return int(seed) * 100003 + int(epoch) + RANK_SEED_STRIDE * int(rank)


def data_seed(seed: int, rank: int = 0) -> int:
    """Seed of the global torch RNG that in-process data loading (``num_workers=0``) draws flips from."""
    return int(seed) + RANK_SEED_STRIDE * int(rank)


class Snapshot:
    """A CPU copy of a model's saved tensors and config: what ``save_checkpoint`` needs, kept for later."""

    def __init__(self, model) -> None:
        self.config = model.config
        self._state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
                       if not k.startswith("text_encoder.")}

    def state_dict(self):
        return self._state


def load_model_weights_strict(model, weights: dict) -> None:
    """Load resume weights, refusing any missing, unexpected or mis-shaped tensor.

    Checkpoints leave out the frozen text encoder (it is rebuilt from its name), so those keys,
    and only those, may be absent.
    """
    from metaseg.errors import CheckpointError

    expected = {k for k in model.state_dict() if not k.startswith("text_encoder.")}
    missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"resume weights do not match the model: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}); the run folder holds another model"
        )
    try:
        model.load_state_dict(weights, strict=False)  # text_encoder.* stay as built; all else checked above
    except RuntimeError as exc:  # size mismatches
        raise CheckpointError(f"resume weights do not match the model: {' '.join(str(exc).split())[:300]}") from None


def write_last_state(path: Path, epoch: int, p: Progress, bank, scaler, policy) -> None:
    """``last_state.json`` (written atomically): counters, RNG states, GradScaler state."""
    import torch

    state = {"epoch": epoch, "global_step": p.global_step, "best_miou": p.best_miou,
             "best_epoch": p.best_epoch, "bad_evals": p.bad_evals, "total_steps": p.total_steps,
             "torch_rng": rng_to_list(torch.get_rng_state()),
             "bank_rng": rng_to_list(bank.state()) if bank is not None else None,
             "scaler": scaler.state_dict() if policy.scaler else None, "units": "percent"}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    tmp.replace(path)


def restore_last_state(out_dir: Path, p: Progress, model, optimizer, bank, scaler, policy, seed: int,
                       rank: int) -> None:
    """Load ``last.*`` + ``last_state.json`` of ``out_dir`` into the model, optimiser and ``p``.

    The saved torch RNG state is rank 0's: other ranks re-seed so they keep drawing their own flips.
    """
    import torch
    from safetensors.torch import load_file

    state = json.loads((out_dir / "last_state.json").read_text())
    weights = load_file(str(out_dir / "last.safetensors"), device="cpu")
    load_model_weights_strict(model, weights)
    load_optimizer(optimizer, out_dir / "last_optim.safetensors")
    p.start_epoch, p.global_step = int(state["epoch"]) + 1, int(state["global_step"])
    p.best_miou, p.best_epoch = float(state["best_miou"]), int(state["best_epoch"])
    p.bad_evals = int(state["bad_evals"])
    torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
    if rank:
        torch.manual_seed(data_seed(seed, rank) + p.start_epoch)
    if bank is not None and state.get("bank_rng") is not None:
        bank.gen.set_state(torch.tensor(state["bank_rng"], dtype=torch.uint8))
    if policy.scaler and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
