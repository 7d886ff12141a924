"""The ``fantasyportrait encode`` command."""

import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from checkpoint_factory import save_ckpt
from fantasyportrait_core import build_windows, load_adapter
from fantasyportrait_tools.cli import build_parser, main

ROOT = __import__("conftest").ROOT


@pytest.fixture
def files(tmp_path, tiny_adapter_state):
    ckpt = save_ckpt(tmp_path / "fantasyportrait_model.ckpt", tiny_adapter_state)
    feats = torch.randn(2, 9, 554, generator=torch.Generator().manual_seed(5))
    save_file({"features": feats}, tmp_path / "feats.safetensors")
    return ckpt, tmp_path / "feats.safetensors", feats


def test_encode_writes_tokens_and_windows(files, tmp_path):
    ckpt, feats_path, feats = files
    out = tmp_path / "out" / "tokens.safetensors"
    assert main(["encode", "--adapter", str(ckpt), "--features", str(feats_path), "--out", str(out),
                 "--mouth-scale", "0.5"]) == 0
    data = load_file(out)
    assert data["tokens"].shape == (2, 9 * 24, 32) and data["tokens"].dtype == torch.float32
    assert data["windows"].shape == (2, 3, 97, 32) and data["windows"].dtype == torch.float32
    torch.testing.assert_close(data["windows"], build_windows(data["tokens"], 9, 24))
    from fantasyportrait_core import GroupScales
    with torch.no_grad():
        expected = load_adapter(ckpt).encoder(feats, GroupScales(mouth=0.5))
    torch.testing.assert_close(data["tokens"], expected)
    with safe_open(out, "pt") as fh:
        meta = fh.metadata()
    assert meta["num_frames"] == "9" and meta["tokens_per_frame"] == "24"


def test_encode_fit_trim(files, tmp_path, capsys):
    ckpt, _, feats = files
    save_file({"features": feats[:, :7].contiguous()}, tmp_path / "f7.safetensors")
    out = tmp_path / "t.safetensors"
    args = ["encode", "--adapter", str(ckpt), "--features", str(tmp_path / "f7.safetensors"), "--out", str(out)]
    assert main(args) == 2
    assert "4k+1" in capsys.readouterr().err
    assert main(args + ["--fit", "trim"]) == 0
    assert "trimmed the driving features from 7 to 5" in capsys.readouterr().err
    assert load_file(out)["windows"].shape == (2, 2, 97, 32)


def test_encode_errors_are_one_line_messages(files, tmp_path, capsys):
    ckpt, feats_path, feats = files
    out = str(tmp_path / "o.safetensors")
    assert main(["encode", "--adapter", str(ckpt), "--features", str(tmp_path / "missing.safetensors"), "--out", out]) == 2
    assert "Features file not found" in capsys.readouterr().err
    save_file({"feats": feats}, tmp_path / "wrongkey.safetensors")
    assert main(["encode", "--adapter", str(ckpt), "--features", str(tmp_path / "wrongkey.safetensors"), "--out", out]) == 2
    assert "no 'features' tensor (it has: feats)" in capsys.readouterr().err
    save_file({"features": feats[..., :500].contiguous()}, tmp_path / "narrow.safetensors")
    assert main(["encode", "--adapter", str(ckpt), "--features", str(tmp_path / "narrow.safetensors"), "--out", out]) == 2
    assert "width 500" in capsys.readouterr().err
    assert main(["encode", "--adapter", str(feats_path), "--features", str(feats_path), "--out", out]) == 2
    assert "not a FantasyPortrait adapter" in capsys.readouterr().err


def test_help_explains_every_option():
    """Every option of every command has its own help text, which states the default where there is one, and
    appears in that command's --help."""
    import argparse

    commands = build_parser()._subparsers._group_actions[0].choices
    assert set(commands) >= {"extract", "encode", "run", "batch", "setup"}
    for name, command in commands.items():
        options = [a for a in command._actions if a.option_strings and a.dest != "help"]
        helps = [a.help for a in options]
        assert all(helps) and len(set(helps)) == len(helps), name  # none missing, none copied from another
        for action in options:
            if action.default not in (None, False, [], argparse.SUPPRESS):
                assert "default" in action.help or str(action.default) in action.help, (name, action.dest)
        shown = subprocess.run([sys.executable, "-m", "fantasyportrait_tools", name, "--help"], cwd=ROOT,
                               capture_output=True, text=True)
        assert shown.returncode == 0, shown.stderr
        for action in options:
            assert action.option_strings[0] in shown.stdout, (name, action.option_strings[0])