"""Training config: paper defaults, YAML + key=value overrides, one-line errors, CLI exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from metaseg.errors import ConfigError
from training.config import TrainConfig, apply_overrides, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"


def test_defaults_are_the_paper_settings():
    cfg = TrainConfig()
    assert (cfg.lr, cfg.weight_decay, cfg.batch_size, cfg.epochs) == (3e-4, 2.5e-4, 2, 45)
    assert cfg.augment and cfg.early_stopping_patience and cfg.negatives


@pytest.mark.parametrize("name", ["openearthmap", "loveda", "potsdam"])
def test_paper_configs(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert cfg.dataset == name and cfg.model == "metasegnet_swin_b"
    assert (cfg.image_size, cfg.batch_size, cfg.epochs, cfg.lr, cfg.weight_decay) == (1024, 2, 45, 3e-4, 2.5e-4)
    assert cfg.amp and cfg.prompt_mode == "climate"


def test_synth_config_is_cpu_sized():
    cfg = load_config(CONFIGS / "synth.yaml")
    assert cfg.dataset == "synthearth" and cfg.model == "metasegnet_demo"
    assert cfg.image_size == 256 and cfg.device == "cpu" and cfg.epochs <= 10 and cfg.num_workers == 0


def test_overrides_are_parsed_as_yaml():
    cfg = load_config(CONFIGS / "synth.yaml", ["epochs=3", "amp=true", "image_size=null", "lr=1e-3",
                                               "model_overrides={caf_dim: 64}", "model_overrides.pos_grid=4",
                                               "out_dir=runs/x y"])
    assert cfg.epochs == 3 and cfg.amp is True and cfg.image_size is None and cfg.lr == 1e-3
    assert cfg.model_overrides == {"caf_dim": 64, "pos_grid": 4}
    assert cfg.out_dir == "runs/x y"
    assert isinstance(load_config(None, ["lr=1"]).lr, float)
    assert apply_overrides({"a": {"b": 1}}, ["a.c=2"]) == {"a": {"b": 1, "c": 2}}


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("epochz=3", "unknown config key.*epochz"),
        ("epochs=three", "epochs must be int"),
        ("epochs=0", "epochs must be >= 1"),
        ("batch_size=1.5", "batch_size must be int"),
        ("lr=-1", "lr must be > 0"),
        ("lr=fast", "lr must be float"),
        ("amp=maybe", "amp must be bool"),
        ("dataset=imagenet", "dataset must be one of"),
        ("prompt_mode=loud", "prompt_mode must be one of"),
        ("device=tpu", "device must be"),
        ("image_size=0", "image_size must be >= 1"),
        ("model_overrides=3", "model_overrides must be dict"),
        ("noequals", "key=value"),
        ("epochs=[1", "cannot parse value of epochs"),
    ],
)
def test_bad_values_raise_one_line_config_errors(override, pattern):
    with pytest.raises(ConfigError, match=pattern) as info:
        load_config(CONFIGS / "synth.yaml", [override])
    assert "\n" not in str(info.value)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)
    bad.write_text("epochs: [\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(bad)


def test_cli_exits_2_with_one_line(capsys):
    from training.train import main

    assert main(["--config", str(CONFIGS / "synth.yaml"), "bogus_key=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown config key") and err.count("\n") == 1
