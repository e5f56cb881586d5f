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


# ----------------------------------------------------------------------------- the paper's 399.7 M (issue 23)
def test_bert_param_formula_matches_a_built_bert():
    import torch
    from transformers import BertConfig, BertModel

    from metaseg.models.param_count import bert_params

    for layers, hidden, heads, inter, vocab, pos in ((2, 64, 4, 256, 1000, 128), (1, 48, 3, 96, 50, 16)):
        with torch.device("meta"):
            built = BertModel(BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                                         num_attention_heads=heads, intermediate_size=inter,
                                         max_position_embeddings=pos))
        assert bert_params(layers, hidden, heads, inter, vocab, pos) == sum(p.numel() for p in built.parameters())
    assert bert_params(12, 768, 12, 3072) == 109_482_240  # bert-base-uncased, as loaded by transformers
    assert bert_params(24, 1024, 16, 4096) == 335_141_888  # bert-large-uncased


def test_paper_comparison_reproduces_the_model_it_was_given():
    from metaseg.models.param_count import paper_comparison
    from metaseg.models.registry import create_model

    model = create_model("metasegnet_demo")
    te = model.text_encoder.model.config
    own = {"own": {"layers": te.num_hidden_layers, "hidden": te.hidden_size, "heads": te.num_attention_heads,
                   "intermediate": te.intermediate_size}}
    block = paper_comparison(model, own)
    row = block["with_text_encoder"][0]
    assert row["total_params"] == block["this_model"]["total_params"] == sum(p.numel() for p in model.parameters())
    assert row["trainable_params"] == block["this_model"]["trainable_params"]
    assert paper_comparison(create_model("baseline_demo")) is None


def test_bert_large_variant_is_listed_and_configured():
    from metaseg.models.registry import list_variants, variant_config

    assert "metasegnet_swin_b_bert_large" in list_variants()
    cfg = variant_config("metasegnet_swin_b_bert_large")
    base = variant_config("metasegnet_swin_b")
    assert cfg.text_encoder == "bert-large-uncased" and cfg.encoder == base.encoder and cfg.caf_dim == base.caf_dim
