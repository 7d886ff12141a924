"""``fantasyportrait run`` protocol handling against a small local fake of ComfyUI's HTTP API."""

import json
import re

import pytest

from fake_comfy import OBJECT_INFO, WORKFLOW, FakeComfy
from fantasyportrait_core import FantasyPortraitError
from fantasyportrait_tools.cli import main
from fantasyportrait_tools.workflow import fill_inputs, load_workflow

@pytest.fixture
def fake(tmp_path):
    """The shared fake server (tests/fake_comfy.py), a workflow file and input files; yields (fake, tmp, wf)."""
    server = FakeComfy(OBJECT_INFO, seconds=0.05, fail_seeds={13})
    wf = tmp_path / "wf_api.json"
    wf.write_text(json.dumps(WORKFLOW))
    for name in ("face.png", "drive1.mp4", "drive2.mp4"):
        (tmp_path / name).write_bytes(b"x" * 100)
    yield server, tmp_path, wf
    server.kill()


def args(server, tmp, wf, *videos):
    out = ["run", "--server", server.url, "--workflow", str(wf), "--image", str(tmp / "face.png"), "--out",
           str(tmp / "out" / "result.mp4"), "--timeout", "30"]
    for v in videos:
        out += ["--video", str(tmp / v)]
    return out


def test_run_uploads_fills_queues_and_downloads(fake, capsys):
    server, tmp, wf = fake
    assert main(args(server, tmp, wf, "drive1.mp4", "drive2.mp4")) == 0
    assert list(server.uploads) == ["face.png", "drive1.mp4", "drive2.mp4"]
    (body,) = server.posted
    sent = body["prompt"]
    assert sent["1"]["inputs"]["image"] == "face.png"
    assert sent["2"]["inputs"]["file"] == "drive1.mp4" and sent["10"]["inputs"]["file"] == "drive2.mp4"
    assert body["client_id"]
    (pid, _), = server.executed
    assert (tmp / "out" / "result.mp4").read_bytes() == f"VIDEO {pid}.mp4".encode()  # the SaveVideo output
    assert f"queued as {pid}" in capsys.readouterr().err


REFUSED = {"16": {"class_type": "FantasyPortraitModelLoader", "errors": [
    {"message": "Value not in list", "details": "model_name: 'x.ckpt'"}]}}


@pytest.mark.parametrize("refuse, seed, message", [
    (REFUSED, 1, "node 16 (FantasyPortraitModelLoader): Value not in list model_name: 'x.ckpt'"),  # validation
    (None, 13, "node 19 (FantasyPortraitSampler) failed: FantasyPortraitError: bad input for this job"),  # running
])
def test_a_failed_prompt_is_reported_with_the_node(fake, capsys, refuse, seed, message):
    server, tmp, wf = fake
    server.refuse = refuse
    wf.write_text(json.dumps({**WORKFLOW, "7": {"class_type": "KSampler", "inputs": {"seed": seed, "model": 1}}}))
    assert main(args(server, tmp, wf, "drive1.mp4")) == 1
    assert message in capsys.readouterr().err
    assert not (tmp / "out" / "result.mp4").exists()


def test_unreachable_server_and_bad_inputs(tmp_path, capsys):
    wf = tmp_path / "wf_api.json"
    wf.write_text(json.dumps(WORKFLOW))
    (tmp_path / "face.png").write_bytes(b"x")
    assert main(["run", "--server", "http://127.0.0.1:9", "--workflow", str(wf), "--image",
                 str(tmp_path / "face.png"), "--out", str(tmp_path / "o.mp4")]) == 1
    assert "Cannot reach ComfyUI at http://127.0.0.1:9" in capsys.readouterr().err
    ui = tmp_path / "ui.json"
    ui.write_text(json.dumps({"nodes": [], "links": []}))
    with pytest.raises(FantasyPortraitError, match="UI-format workflow"):
        load_workflow(str(ui))
    with pytest.raises(FantasyPortraitError, match="3 driving videos were given but the workflow has 2"):
        fill_inputs(WORKFLOW, "a.png", ["1", "2", "3"])


MODELS_WORKFLOW = {
    **WORKFLOW,
    "5": {"class_type": "UNETLoader", "inputs": {"unet_name": "wan2.1_i2v_480p_14B_bf16.safetensors",
                                                 "weight_dtype": "default"}, "_meta": {"title": "Load Wan"}},
    "6": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": "clip_vision_h.safetensors"}},
    "7": {"class_type": "KSampler", "inputs": {"seed": 1, "model": ["5", 0]}, "_meta": {"title": "Sampler"}},
}


def test_missing_model_files_are_named_with_their_folder_before_queueing(fake, capsys):
    server, tmp, wf = fake
    wf.write_text(json.dumps(MODELS_WORKFLOW))
    assert main(args(server, tmp, wf, "drive1.mp4")) == 1
    err = capsys.readouterr().err
    assert ("wan2.1_i2v_480p_14B_bf16.safetensors (node 5, UNETLoader.unet_name): put it in "
            "ComfyUI/models/diffusion_models/") in err
    assert "clip_vision_h" not in err  # present on the server (a V3 combo)
    assert server.posted == [] and server.uploads == {}  # nothing was uploaded or queued
    # with --set naming a file the server has, it runs
    assert main(args(server, tmp, wf, "drive1.mp4") + ["--set", "Load Wan.unet_name=wan2.1_i2v_480p_14B_fp8_e4m3fn"
                                                       ".safetensors", "--set", "7.seed=12345"]) == 0
    sent = server.posted[-1]["prompt"]
    assert sent["5"]["inputs"]["unet_name"] == "wan2.1_i2v_480p_14B_fp8_e4m3fn.safetensors"
    assert sent["7"]["inputs"]["seed"] == 12345  # JSON values keep their type


def test_unknown_node_types_are_reported(fake, capsys):
    server, tmp, wf = fake
    wf.write_text(json.dumps({**WORKFLOW, "9": {"class_type": "FantasyPortraitSampler", "inputs": {}}}))
    assert main(args(server, tmp, wf)) == 1
    assert "The server has no node type(s) FantasyPortraitSampler" in capsys.readouterr().err


def test_set_errors_name_what_is_wrong():
    from fantasyportrait_tools.workflow import apply_overrides

    wf = MODELS_WORKFLOW
    assert apply_overrides(wf, ["KSampler.seed=3", "6.clip_name=other"])["6"]["inputs"]["clip_name"] == "other"
    notes = []  # a connected input takes the value instead of the link, and says so
    assert apply_overrides(wf, ["7.model=3"], notes)["7"]["inputs"]["model"] == 3
    assert notes == [f"--set 7.model=3: KSampler.model now takes this value instead of node "
                     f"{wf['7']['inputs']['model'][0]}'s output {wf['7']['inputs']['model'][1]}"]
    for item, said in (("seed=3", "write NODE.INPUT=VALUE"), ("99.seed=3", "the workflow has no node '99'"),
                       ("7.steps=3", "node 7 (KSampler) has no input 'steps'; its inputs: model, seed"),
                       ("LoadVideo.file=x.mp4", "2 nodes are called 'LoadVideo' (ids 10, 2)")):
        with pytest.raises(FantasyPortraitError, match=re.escape(said)):
            apply_overrides(wf, [item])


def test_private_server_needs_a_comfyui(tmp_path, capsys):
    from fantasyportrait_tools.private import find_comfyui

    (tmp_path / "notcomfy").mkdir()
    with pytest.raises(FantasyPortraitError, match="notcomfy is not a ComfyUI folder"):
        find_comfyui(str(tmp_path / "notcomfy"))
    with pytest.raises(FantasyPortraitError, match="ComfyUI folder not found"):
        find_comfyui(str(tmp_path / "nothing"))
    # this checkout is not inside a ComfyUI's custom_nodes/: no --server and no --comfyui is a clear error
    wf = tmp_path / "wf_api.json"
    wf.write_text(json.dumps(WORKFLOW))
    assert main(["run", "--workflow", str(wf), "--out", str(tmp_path / "o.mp4")]) == 2
    assert "No ComfyUI to start" in capsys.readouterr().err
    fake_comfy = tmp_path / "ComfyUI"
    (fake_comfy / "comfy").mkdir(parents=True)
    (fake_comfy / "main.py").write_text("import sys; print('boom: no such module'); sys.exit(3)")
    assert main(["run", "--workflow", str(wf), "--out", str(tmp_path / "o.mp4"), "--comfyui", str(fake_comfy)]) == 1
    err = capsys.readouterr().err
    assert "ComfyUI exited while starting (status 3)" in err and "boom: no such module" in err


def test_a_private_server_runs_on_comfyuis_own_python(tmp_path):
    """Without --comfyui-python the private ComfyUI starts with the Python ComfyUI was installed with (its
    venv here), not the one running the command; --comfyui-python still wins."""
    import sys

    from fantasyportrait_tools.private import PrivateServer

    venv_python = tmp_path / "ComfyUI" / "venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.write_text("")
    assert PrivateServer(str(tmp_path / "ComfyUI")).python == str(venv_python)
    assert PrivateServer(str(tmp_path / "ComfyUI"), "/opt/py").python == "/opt/py"
    assert PrivateServer(str(tmp_path)).python == sys.executable
