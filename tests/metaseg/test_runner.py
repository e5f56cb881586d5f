"""The Dask job runner: outcomes, errors, local clusters, a killed worker, bad addresses."""

from __future__ import annotations

import os
import signal

import pytest

from metaseg.errors import ConfigError
from metaseg.runner import ModelSpec, Outcome, Runner, load_predictor, one_line, validate_workers
from tests.fixtures import runner_tasks


def test_in_process_runner_yields_one_outcome_per_item():
    with Runner(workers=0, progress=False) as runner:
        outcomes = list(runner.run(runner_tasks.square, range(7)))
    assert sorted(o.index for o in outcomes) == list(range(7))
    assert all(isinstance(o, Outcome) and o.ok for o in outcomes)
    assert {o.item: o.value for o in outcomes} == {i: i * i for i in range(7)}


def test_errors_become_one_line_reasons_and_the_job_goes_on():
    seen = []
    with Runner(workers=0, progress=False, on_progress=lambda d, t: seen.append((d, t))) as runner:
        outcomes = {o.item: o for o in runner.run(runner_tasks.fail_on_odd, range(6))}
    assert [outcomes[i].ok for i in range(6)] == [True, False, True, False, False, False]
    assert outcomes[1].error == "tile 1: not a GeoTIFF"  # our own errors: the message alone
    assert outcomes[4].error == "ZeroDivisionError: division by zero"
    assert seen[-1] == (6, 6) and len(seen) == 6


def test_empty_input_runs_nothing():
    with Runner(workers=0, progress=False) as runner:
        assert list(runner.run(runner_tasks.square, [])) == []


def test_process_cluster_survives_a_killed_worker():
    """Kill one of two worker processes mid-run: every item still yields exactly one correct outcome."""
    n = 16
    with Runner(workers=2, progress=False) as runner:
        pids = runner.client.run(os.getpid)
        assert len(pids) == 2 and os.getpid() not in pids.values()
        victim = sorted(pids.values())[0]
        outcomes = []
        for outcome in runner.run(runner_tasks.whoami, range(n), delay=0.25):
            outcomes.append(outcome)
            if len(outcomes) == 2:
                os.kill(victim, signal.SIGKILL)
    assert sorted(o.index for o in outcomes) == list(range(n))
    assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok]
    assert [o.value[0] for o in sorted(outcomes, key=lambda o: o.index)] == list(range(n))
    late = [o.value[1] for o in outcomes[4:]]
    assert victim not in late  # the dead worker's tasks ran elsewhere


def test_unreachable_scheduler_is_a_one_line_config_error(monkeypatch):
    import metaseg.runner as runner_mod

    monkeypatch.setattr(runner_mod, "CONNECT_TIMEOUT_S", 1.0)
    with pytest.raises(ConfigError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        Runner(scheduler="tcp://127.0.0.1:9", progress=False)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"workers": -1}, "workers must be >= 0"), ({"workers": "two"}, "whole number"),
     ({"scheduler": "nonsense"}, "tcp://host:port")],
)
def test_bad_runner_arguments(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Runner(progress=False, **kwargs)


def test_validate_workers():
    validate_workers(2, None)
    validate_workers(None, "tcp://127.0.0.1:8786")
    with pytest.raises(ConfigError, match="exclude each other"):
        validate_workers(3, "tcp://127.0.0.1:8786")


def test_model_spec_validation_and_label():
    with pytest.raises(ConfigError, match="variant name or a checkpoint"):
        ModelSpec()
    with pytest.raises(ConfigError, match="unknown backend"):
        ModelSpec(name="metasegnet_demo", backend="tensorrt")
    with pytest.raises(ConfigError, match="threads"):
        ModelSpec(name="metasegnet_demo", threads=0)
    assert ModelSpec(name="baseline_demo").label == "baseline_demo"
    assert ModelSpec(name="x", checkpoint="runs/a/best").label == "runs/a/best"


def test_load_predictor_loads_once_per_process():
    spec = ModelSpec(name="baseline_demo", device="cpu")
    first = load_predictor(spec)
    assert load_predictor(ModelSpec(name="baseline_demo", device="cpu")) is first
    assert first.name == "baseline_demo"


def test_one_line():
    assert one_line(ValueError("a\n  b")) == "ValueError: a b"
    assert one_line(ConfigError("bad\nvalue")) == "bad value"
