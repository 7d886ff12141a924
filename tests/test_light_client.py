"""The HTTP-only commands are a light client: ``run``, ``batch`` and every ``--help`` work with torch, numpy and
OpenCV made impossible to import (a laptop without them drives a remote ComfyUI), and ``extract``/``encode``
then say what to install."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from fake_comfy import OBJECT_INFO, WORKFLOW, FakeComfy

BLOCKED = ("torch", "numpy", "cv2")
#: runs the command line, with imports of BLOCKED refused when FP_BLOCK is set; without it, reports which of them
#: got loaded (they are installed here, so an import of one would show)
LAUNCH = f"""
import importlib.abc, os, sys
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ImportError(f"{{name}} is not installed here")
if os.environ.get("FP_BLOCK"):
    sys.meta_path.insert(0, Refuse())
from fantasyportrait_tools.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print("LOADED", sorted({{m.split(".")[0] for m in sys.modules}} & set({BLOCKED!r})), file=sys.stderr)
sys.exit(code)
"""


def light(*args, blocked=True):
    env = {**os.environ, "FP_BLOCK": "1"} if blocked else {k: v for k, v in os.environ.items() if k != "FP_BLOCK"}
    return subprocess.run([sys.executable, "-c", LAUNCH, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=env)


@pytest.mark.parametrize("command", [[], ["run"], ["batch"], ["setup"], ["extract"], ["encode"]])
def test_every_help_works_without_torch_numpy_or_opencv(command):
    proc = light(*command, "--help")
    assert proc.returncode == 0 and "usage: fantasyportrait" in proc.stdout, proc.stderr
    allowed = light(*command, "--help", blocked=False)  # with them installed, none is imported either
    assert allowed.returncode == 0 and "LOADED []" in allowed.stderr, allowed.stderr


def test_run_and_batch_speak_http_without_them(tmp_path):
    server = FakeComfy(OBJECT_INFO, seconds=0.05)
    try:
        wf = tmp_path / "wf_api.json"
        wf.write_text(json.dumps({**WORKFLOW, "7": {"class_type": "KSampler", "inputs": {"seed": 1, "model": 1}}}))
        for name in ("face.png", "a.mp4", "b.mp4"):
            (tmp_path / name).write_bytes(name.encode() * 50)
        proc = light("run", "--server", server.url, "--workflow", str(wf), "--image", str(tmp_path / "face.png"),
                     "--video", str(tmp_path / "a.mp4"), "--video", str(tmp_path / "b.mp4"),
                     "--out", str(tmp_path / "out.mp4"), "--timeout", "30")
        assert proc.returncode == 0, proc.stderr
        assert (tmp_path / "out.mp4").read_bytes().startswith(b"VIDEO ")
        jobs = tmp_path / "jobs.csv"
        jobs.write_text(f"image,video,video2,workflow,seed\nface.png,a.mp4,b.mp4,{wf},1\nface.png,a.mp4,b.mp4,{wf},2\n")
        proc = light("batch", str(jobs), "--server", server.url, "--out-dir", str(tmp_path / "outs"), "--timeout", "30",
                     blocked=False)  # installed but never imported
        assert proc.returncode == 0, proc.stderr
        assert len(server.executed) == 3 and "LOADED []" in proc.stderr
        # a shipped workflow by its short name (checked against the fake server's node list before anything is sent)
        proc = light("run", "--server", server.url, "--workflow", "custom_sampling", "--out", str(tmp_path / "x.mp4"))
        assert proc.returncode == 1 and "The server has no node type(s) BasicScheduler" in proc.stderr
    finally:
        server.kill()


def test_extract_and_encode_say_what_to_install(tmp_path):
    for command in (["extract", "--models", str(tmp_path), "--video", "a.mp4", "--out", str(tmp_path / "f.st")],
                    ["encode", "--adapter", "a.ckpt", "--features", "f.st", "--out", str(tmp_path / "t.st")]):
        proc = light(*command)
        assert proc.returncode == 2, proc.stderr
        assert f"fantasyportrait {command[0]} needs the optional package 'numpy'" in proc.stderr
        assert "pip install numpy" in proc.stderr
