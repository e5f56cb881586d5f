"""``python -m metaseg info``: variant list, parameter counts, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from metaseg.cli import main


def test_list_is_torch_free_and_one_per_line():
    code = "import sys; from metaseg.cli import main; main(['info', '--list']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[-1] == "False"
    assert {"metasegnet_swin_b", "baseline_swin_b", "metasegnet_demo", "baseline_demo"} <= set(out[:-1])


def test_unknown_model_exit_2_lists_names(capsys):
    assert main(["info", "--model", "metasegnet_swin_x", "--json"]) == 2
    err = capsys.readouterr().err
    assert "metasegnet_swin_x" in err and "metasegnet_demo" in err and err.count("\n") == 1


def test_missing_arguments_exit_2():
    with pytest.raises(SystemExit) as exc:
        main(["info"])
    assert exc.value.code == 2


def test_baseline_counts_json(capsys):
    assert main(["info", "--model", "baseline_demo", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["total_params"] == info["trainable_params"] + info["frozen_params"]
    assert info["frozen_params"] == 0 and info["input_size"] == [512, 512] and info["class_set"] == "openearthmap"
    comps = info["components"]
    assert comps["text_encoder"]["total"] == 0 and comps["decoder"]["total"] == 0
    assert sum(c["total"] for c in comps.values()) == info["total_params"]
    assert comps["image_encoder"]["total"] > 3_000_000 // 2


def test_metasegnet_demo_with_checkpoint(tmp_path, capsys):
    import torch

    from metaseg.checkpoints import save_checkpoint
    from metaseg.models import create_model

    torch.manual_seed(0)
    model = create_model("metasegnet_demo", pretrained=False, caf_dim=32, caf_heads=2, embed_dim=16,
                         decoder_dim=16, max_tokens=16, pos_grid=4)
    save_checkpoint(model, tmp_path / "m")
    assert main(["info", "--model", "metasegnet_demo", "--checkpoint", str(tmp_path / "m"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["frozen_params"] == info["components"]["text_encoder"]["total"] > 20_000_000
    assert info["components"]["text_encoder"]["trainable"] == 0
    assert info["trainable_params"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    # a checkpoint of another variant, or a missing one, is a user error
    assert main(["info", "--model", "baseline_demo", "--checkpoint", str(tmp_path / "m")]) == 2
    assert main(["info", "--model", "baseline_demo", "--checkpoint", str(tmp_path / "none.safetensors")]) == 2
    assert "not found" in capsys.readouterr().err
