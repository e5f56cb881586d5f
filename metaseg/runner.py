"""Many tiles on many machines: one job runner on Dask distributed.

``metaseg map`` (large-area mapping) and ``training.sweep`` (prompt experiments) both hand their
tiles to :class:`Runner`; neither has a process pool of its own.

How a job runs:

1. **Cluster.** ``Runner(workers=N)`` starts a :class:`distributed.LocalCluster` of ``N`` worker
   processes with one task thread each (``workers=0`` runs one worker thread inside this
   process, for callers such as the app that should not spawn processes).
   ``Runner(scheduler="tcp://host:port")`` connects to a cluster started elsewhere
   (``dask scheduler`` / ``dask worker``, dask-jobqueue, Kubernetes, ...); it first checks that the
   workers can import ``metaseg`` (they run the project's code by name).
2. **Tasks are small.** The caller submits a module-level function and a list of small items
   (tile *paths*, prompt *texts* already resolved by the caller: the runner never reads the
   prompt store). Each worker loads a model once, on its first task, through
   :func:`load_predictor` and keeps it for every later task.
3. **Results stream back** to the client as tasks finish, as :class:`Outcome` objects, in
   completion order; only the client writes databases, summaries and vector files.
4. **Failures.** An exception inside the function becomes ``Outcome.error`` (one line) and the
   job goes on. A worker that dies mid-task (killed, out of memory, machine lost) does not lose
   the task: the scheduler re-runs it on another worker, and the client still receives exactly
   one outcome per item. A task that kills workers repeatedly ends as an error outcome.
5. **Interrupts.** ``KeyboardInterrupt`` (Ctrl-C) while iterating cancels the tasks not yet
   finished and is re-raised, so the caller can record what it has as partial.

Threads: a local cluster gives each worker process ``max(1, cores // workers)`` torch threads
(environment variable ``METASEG_WORKER_THREADS``, read by :func:`load_predictor`), so workers do
not oversubscribe the cores; ``ModelSpec.threads`` overrides it.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from metaseg.errors import ConfigError, MetasegError

logger = logging.getLogger(__name__)

#: Environment variable a local cluster sets in its worker processes (torch threads per worker).
THREADS_ENV = "METASEG_WORKER_THREADS"
#: Seconds to wait for a remote scheduler to answer and for at least one worker to be there.
CONNECT_TIMEOUT_S = 20.0
BACKENDS = ("torch", "onnx", "onnx-int8", "auto")


# --------------------------------------------------------------------------- models on workers
@dataclass(frozen=True)
class ModelSpec:
    """A picklable recipe for a :class:`metaseg.inference.Predictor`, built once per worker.

    Attributes:
        name: registry variant; a ``*_demo`` name alone loads the weights shipped with the project.
        checkpoint: checkpoint path, export folder or hub id (takes precedence over ``name`` for
            the weights; ``name``, when also given, must match the checkpoint's variant).
        device: ``None`` = CUDA when the worker has one, else CPU; or ``"cpu"``/``"cuda"``.
        backend: inference backend handed to the predictor (``torch`` today's path).
        threads: torch threads in the worker (``None``: what the cluster set, see module docs).
    """

    name: str | None = None
    checkpoint: str | None = None
    device: str | None = None
    backend: str = "torch"
    threads: int | None = None

    def __post_init__(self) -> None:
        if not self.name and not self.checkpoint:
            raise ConfigError("a model needs a variant name or a checkpoint")
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown backend {self.backend!r}; use one of {', '.join(BACKENDS)}")
        if self.threads is not None and int(self.threads) < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")

    @property
    def label(self) -> str:
        """Short human-readable name (for logs and summaries)."""
        return str(self.checkpoint or self.name)


_PREDICTORS: dict[ModelSpec, Any] = {}
_PREDICTORS_LOCK = threading.Lock()


def _worker_threads(spec: ModelSpec) -> int | None:
    if spec.threads is not None:
        return int(spec.threads)
    value = os.environ.get(THREADS_ENV, "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def load_predictor(spec: ModelSpec) -> Any:
    """The :class:`~metaseg.inference.Predictor` for ``spec``, loaded once per process.

    Called inside task functions on workers: the first task of a worker loads the model, every
    later task (and every later call with an equal spec) gets the same object. Thread-safe.
    """
    with _PREDICTORS_LOCK:
        predictor = _PREDICTORS.get(spec)
        if predictor is not None:
            return predictor
        threads = _worker_threads(spec)
        import torch

        from metaseg.inference import Predictor

        if threads is not None and torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        kwargs: dict[str, Any] = {} if spec.backend == "torch" else {"backend": spec.backend}
        if spec.checkpoint:
            predictor = Predictor.from_checkpoint(
                spec.checkpoint, spec.device, expected_name=spec.name or None, **kwargs
            )
        else:
            predictor = Predictor.from_name(str(spec.name), spec.device, **kwargs)
        _PREDICTORS[spec] = predictor
        logger.info("worker %d loaded %s (%s threads)", os.getpid(), spec.label, torch.get_num_threads())
        return predictor


def clear_predictors() -> None:
    """Forget the models this process loaded (tests; frees memory)."""
    with _PREDICTORS_LOCK:
        _PREDICTORS.clear()


# --------------------------------------------------------------------------- outcomes
@dataclass
class Outcome:
    """One finished task.

    Attributes:
        index: position of the item in the list given to :meth:`Runner.run`.
        item: that item.
        value: the task function's return value (``None`` on error).
        error: one-line reason when the function raised (or its workers kept dying), else ``None``.
        seconds: time the function ran on its worker.
        worker: address of the worker that produced the outcome (``""`` if unknown).
    """

    index: int
    item: Any
    value: Any = None
    error: str | None = None
    seconds: float = 0.0
    worker: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


def one_line(exc: BaseException) -> str:
    """An exception as one line: the message alone for our own errors, else ``Type: message``."""
    text = " ".join(str(exc).split())
    if isinstance(exc, MetasegError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _invoke(fn: Callable[..., Any], item: Any, args: tuple, kwargs: dict) -> tuple[str, Any, float, str]:
    """Runs on a worker: call ``fn`` and turn any exception into a one-line error value."""
    start = time.perf_counter()
    try:
        from distributed import get_worker

        worker = get_worker().address
    except (ImportError, ValueError):
        worker = ""
    try:
        value = fn(item, *args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - reported to the client as the tile's reason
        logger.debug("task failed on %s", item, exc_info=True)
        return "error", one_line(exc), time.perf_counter() - start, worker
    return "ok", value, time.perf_counter() - start, worker


def _can_import_metaseg() -> bool:
    import importlib.util

    return importlib.util.find_spec("metaseg") is not None


# --------------------------------------------------------------------------- runner
class Runner:
    """Runs a function over many small items on a Dask distributed cluster (see the module docs).

    Args:
        workers: worker processes of a local cluster (``0``: one worker thread in this process).
            Ignored when ``scheduler`` is given.
        scheduler: address of an existing scheduler, e.g. ``tcp://10.0.0.5:8786``.
        desc: label of the progress bar.
        unit: unit of the progress bar (``tile``).
        progress: draw a tqdm progress bar (items done / total, rate, ETA) on stderr.
        on_progress: also called as ``on_progress(done, total)`` after every outcome.

    Raises:
        ConfigError: bad ``workers``/``scheduler`` values, an unreachable scheduler, a cluster
            without workers, or workers that cannot import ``metaseg``.
    """

    def __init__(
        self,
        workers: int = 1,
        scheduler: str | None = None,
        *,
        desc: str = "tiles",
        unit: str = "tile",
        progress: bool = True,
        on_progress: Callable[[int, int], Any] | None = None,
    ) -> None:
        self.desc, self.unit = desc, unit
        self.progress, self.on_progress = progress, on_progress
        self._cluster = None
        self._client = None
        if scheduler:
            self._connect(str(scheduler))
        else:
            self._start_local(workers)

    # ----------------------------------------------------------------- setup
    def _start_local(self, workers: int) -> None:
        try:
            n = int(workers)
        except (TypeError, ValueError):
            raise ConfigError(f"workers must be a whole number, got {workers!r}") from None
        if n < 0:
            raise ConfigError(f"workers must be >= 0, got {n}")
        cores = os.cpu_count() or 1
        threads = max(1, cores // max(n, 1))
        from distributed import Client, LocalCluster

        quiet = logging.ERROR
        if n == 0:
            self._cluster = LocalCluster(
                n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0",
                silence_logs=quiet,
            )
        else:
            self._cluster = LocalCluster(
                n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                silence_logs=quiet, env={THREADS_ENV: str(threads), "OMP_NUM_THREADS": str(threads)},
            )
        self._client = Client(self._cluster, set_as_default=False)

    def _connect(self, address: str) -> None:
        if "://" not in address and ":" not in address:
            raise ConfigError(f"scheduler address {address!r} is not of the form tcp://host:port")
        from distributed import Client

        try:
            self._client = Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ConfigError(f"cannot reach the Dask scheduler at {address}: {one_line(exc)}") from None
        try:
            self._client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
        except (TimeoutError, OSError):
            self.close()
            raise ConfigError(
                f"the Dask scheduler at {address} has no workers; start some with `dask worker {address}`"
            ) from None
        found = self._client.run(_can_import_metaseg)
        missing = sorted(addr for addr, ok in found.items() if not ok)
        if missing:
            self.close()
            raise ConfigError(
                f"{len(missing)} Dask worker(s) cannot import metaseg (e.g. {missing[0]}); start them from "
                "the repository root with PYTHONPATH=$PWD (or pip install the project on their machines)"
            )

    # ----------------------------------------------------------------- properties
    @property
    def client(self) -> Any:
        """The :class:`distributed.Client` (e.g. to run a function on every worker)."""
        if self._client is None:
            raise MetasegError("the runner is closed")
        return self._client

    @property
    def address(self) -> str:
        return str(self.client.scheduler.address)

    @property
    def n_workers(self) -> int:
        return len(self.client.scheduler_info().get("workers", {}))

    # ----------------------------------------------------------------- run
    def run(self, fn: Callable[..., Any], items: Sequence[Any], /, *args: Any, **kwargs: Any) -> Iterator[Outcome]:
        """Call ``fn(item, *args, **kwargs)`` for every item on the cluster; yield outcomes as they finish.

        Each item yields exactly one :class:`Outcome`, whatever happens to workers. Breaking out
        of the loop or Ctrl-C cancels the tasks that have not finished.
        """
        from distributed import as_completed

        items = list(items)
        total = len(items)
        if total == 0:
            return
        token = uuid.uuid4().hex[:8]
        name = getattr(fn, "__name__", "task")
        futures = {}
        for i, item in enumerate(items):
            fut = self.client.submit(
                _invoke, fn, item, args, kwargs, key=f"{name}-{token}-{i}", pure=False, retries=0
            )
            futures[fut.key] = (i, fut)
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=total, desc=self.desc, unit=self.unit, file=sys.stderr, dynamic_ncols=True)
        done = 0
        pending = {fut.key for _, fut in futures.values()}
        try:
            for fut in as_completed([f for _, f in futures.values()], loop=self.client.loop):
                i, _ = futures[fut.key]
                pending.discard(fut.key)
                if fut.status == "finished":
                    status, value, seconds, worker = fut.result()
                    outcome = (
                        Outcome(i, items[i], value=value, seconds=seconds, worker=worker)
                        if status == "ok"
                        else Outcome(i, items[i], error=value, seconds=seconds, worker=worker)
                    )
                else:  # the task itself could not run: its workers kept dying, or it was cancelled
                    exc = fut.exception() if fut.status == "error" else None
                    reason = one_line(exc) if exc is not None else f"task {fut.status}"
                    if exc is not None and type(exc).__name__ == "KilledWorker":
                        reason = "workers kept dying while running this task (out of memory?)"
                    outcome = Outcome(i, items[i], error=reason)
                fut.release()
                done += 1
                if bar is not None:
                    bar.update(1)
                if self.on_progress is not None:
                    self.on_progress(done, total)
                yield outcome
        except (KeyboardInterrupt, GeneratorExit):
            left = [futures[k][1] for k in pending]
            if left:
                self.client.cancel(left)
            raise
        finally:
            if bar is not None:
                bar.close()

    # ----------------------------------------------------------------- lifetime
    def close(self) -> None:
        """Disconnect (and stop the local cluster, if this runner started one)."""
        client, cluster = self._client, self._cluster
        self._client = self._cluster = None
        try:
            if client is not None:
                client.close()
        finally:
            if cluster is not None:
                cluster.close()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def validate_workers(workers: int | None, scheduler: str | None) -> None:
    """Argument check for CLIs, before anything starts: ``--workers`` and ``--scheduler`` exclude each other."""
    if scheduler and workers not in (None, 1):
        raise ConfigError("--workers and --scheduler exclude each other (the cluster decides its workers)")
    if workers is not None and int(workers) < 0:
        raise ConfigError(f"--workers must be >= 0, got {workers}")


__all__ = [
    "BACKENDS",
    "THREADS_ENV",
    "ModelSpec",
    "Outcome",
    "Runner",
    "clear_predictors",
    "load_predictor",
    "one_line",
    "validate_workers",
]
