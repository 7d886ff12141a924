"""Tests against a real ComfyUI: run when COMFYUI_DIR points at a ComfyUI checkout whose Python
(COMFYUI_PYTHON, default: this interpreter) can import ComfyUI and the pack's dependencies."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest

from conftest import ROOT

COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
PYTHON = os.environ.get("COMFYUI_PYTHON", sys.executable)

pytestmark = pytest.mark.skipif(
    not COMFYUI_DIR or not os.path.isfile(os.path.join(COMFYUI_DIR or "", "main.py")),
    reason="needs a real ComfyUI: set COMFYUI_DIR to a ComfyUI checkout (and COMFYUI_PYTHON to its Python)",
)

NODES = ["FantasyPortraitApply", "FantasyPortraitEncode", "FantasyPortraitExpressionExtractor",
         "FantasyPortraitFaceModelLoader", "FantasyPortraitFaceTracker", "FantasyPortraitGuider",
         "FantasyPortraitModelLoader", "FantasyPortraitSampler"]


@pytest.fixture(scope="module")
def host_result():
    proc = subprocess.run([PYTHON, os.path.join(ROOT, "tests", "comfy_host_check.py"), COMFYUI_DIR, ROOT],
                          capture_output=True, text=True, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def test_portrait_off_is_exactly_the_stock_sampler(host_result):
    assert host_result["off_equals_stock"]
    assert host_result["inactive_window_equals_stock"]  # start/end percent outside the schedule
    assert host_result["model_untouched"]  # the user's MODEL is not modified by the patched clone


def test_portrait_on_changes_the_result(host_result):
    assert host_result["on_rel_diff"] > 0.01
    assert host_result["three_pass_finite"] and host_result["two_pass_finite"]
    assert host_result["three_pass_rel_diff"] > 0.01  # portrait_cfg changes the result
    assert host_result["apply_plus_ksampler_equals_sampler_pcfg1"] == 0.0


def test_block_patch_matches_the_released_formula(host_result):
    # native block + scale * W_o(x_ad) beside the cross-attention output, to float rounding
    assert host_result["block_rel_diff"] < 1e-5
    assert host_result["block_branch_rel_effect"] > 1e-2


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_lists_every_node(tmp_path):
    base = tmp_path / "base"
    (base / "custom_nodes").mkdir(parents=True)
    os.symlink(ROOT, base / "custom_nodes" / "ComfyUI-FantasyPortrait")
    front = tmp_path / "frontend"
    front.mkdir()
    port = _free_port()
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen([PYTHON, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
                               "--front-end-root", str(front), "--disable-auto-launch", "--disable-api-nodes",
                               "--use-pytorch-cross-attention", "--base-directory", str(base)],
                              cwd=COMFYUI_DIR, stdout=log, stderr=subprocess.STDOUT)
    try:
        info = None
        for _ in range(120):
            time.sleep(0.5)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/object_info", timeout=5) as r:
                    info = json.load(r)
                break
            except OSError:
                assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
        assert info is not None, "server did not answer"
        for name in NODES:
            assert name in info, name
            node = info[name]
            assert node["category"] == "FantasyPortrait"
            for section in node["input"].values():
                for inp, spec in section.items():
                    assert len(spec) > 1 and spec[1].get("tooltip"), f"{name}.{inp} has no tooltip"
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
