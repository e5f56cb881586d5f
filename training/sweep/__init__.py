"""``python -m training.sweep``: prompt experiments over a whole evaluation set, on Dask.

Examples::

    python -m training.sweep --model metasegnet_demo --baseline baseline_demo --dataset synthearth \\
        --root data/synth_test --split test --variant climate --variant wrong --variant none --workers 2
    python -m training.sweep --checkpoint runs/oem/best.safetensors --dataset openearthmap \\
        --root data/OpenEarthMap --split val --variant climate --variant id:42 \\
        --scheduler tcp://10.0.0.5:8786 --json

What a run does:

1. **Variants are resolved here, on the client**, from the prompt store: for every tile and
   variant, the prompt *text* MetaSegNet gets and the stored version id it came from.
   ``climate``, ``generic``, ``store-generic``, ``none`` and ``wrong`` are ``training.evaluate``'s
   prompt modes (``training.evaluate.PROMPT_MODES``) and
   are taken from the same dataset reader (so ``climate`` here *is* ``training.evaluate
   --prompt-mode climate``); ``source:llm`` / ``source:user`` = the latest version of that source
   for the tile's zone, else the zone's current prompt; ``id:N`` = prompt version N on the tiles of
   its zone (it must be written for the dataset's class set), the current prompt elsewhere.
2. **One task per tile** goes to :class:`metaseg.runner.Runner` (``--workers N`` local processes,
   or ``--scheduler ADDR``): the tile's *paths* and its distinct prompt texts. The worker reads and
   preprocesses the tile once, runs the baseline once, and MetaSegNet once per distinct text
   (two variants giving a tile the same text cost one pass); models are loaded once per worker
   and text features are cached per worker by the model. Each tile is run whole (as in
   ``training.evaluate``). The task returns one ``K × K`` confusion matrix per distinct text and
   one for the baseline: a few hundred integers.
3. **The client alone writes** the experiment into the prompt store
   (:mod:`prompts_db.experiments`), a few tiles per transaction, and prints the summary computed
   from the stored counts. A lost worker's tiles are re-run elsewhere by Dask; a tile is stored
   once whatever happens.

Ctrl-C stores the tiles finished so far, marks the experiment ``incomplete`` and exits 130.
Exit codes: 0 done; 2 bad arguments (unknown variant, missing prompt id, empty dataset, ...);
3 finished but some tiles failed (the experiment is ``incomplete``; reasons in ``errors``).

JSON keys (values in percent, as ``training.evaluate``): ``experiment_id, tiles, variants``
(variant → ``{miou, oa, mf1, precision, recall, per_class}``), ``baseline`` (same keys, when a
baseline is given), plus ``status, n_tiles, model, baseline_model, dataset, split, prompts``
(variant → prompt version ids used), ``errors, seconds``.

Package layout: :mod:`~training.sweep.variants` (variants → texts per tile),
:mod:`~training.sweep.task` (the worker task), :mod:`~training.sweep.job` (planning, running,
storing), :mod:`~training.sweep.report` (identities, report, table), :mod:`~training.sweep.cli`.
"""

from training.sweep.cli import build_parser, main, quiet_dask_logs, run
from training.sweep.job import SweepJob, run_sweep
from training.sweep.report import checkpoint_info, format_table
from training.sweep.task import read_tile, sweep_tile
from training.sweep.variants import SOURCES, Plan, parse_variant, resolve_variants

__all__ = [
    "SOURCES",
    "Plan",
    "SweepJob",
    "build_parser",
    "checkpoint_info",
    "format_table",
    "main",
    "parse_variant",
    "quiet_dask_logs",
    "read_tile",
    "resolve_variants",
    "run",
    "run_sweep",
    "sweep_tile",
]
