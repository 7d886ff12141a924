"""``fantasyportrait setup`` against a local fake hub (tests/fake_hub.py, through ``HF_ENDPOINT``): files
land in the folders ComfyUI reads, a second run downloads nothing, an interrupted download resumes, a
corrupted file is fetched again, a full disk is refused up front, ``--dry-run`` writes nothing, and every
failure is named. No test touches the real hub."""

import os
import shutil
import sys

import pytest

from conftest import COMFYUI_DIR, COMFYUI_PYTHON, HAVE_COMFYUI
from fake_hub import FakeHub
from fantasyportrait_tools import setup as fp_setup
from fantasyportrait_tools.cli import main

FILES = {(f.repo, f.path): f"{f.name} ".encode() * 3000 + bytes([i])
         for i, f in enumerate(fp_setup.model_files() + fp_setup.model_files("bf16", "720p")
                               + [fp_setup.DISTILL_LORA])}
UNET = fp_setup.model_files()[0]
FILES[(UNET.repo, UNET.path)] = bytes(range(256)) * (16 * 1024)  # 4 MB: several 1 MB chunks
WANTED = {f.name: f for f in fp_setup.model_files()}

# the folder tests use the real host's files when there is one, so they run again on every tested release
pytestmark = pytest.mark.comfyui


@pytest.fixture
def comfy(tmp_path):
    """A ComfyUI folder: the shared host's files (linked) with empty models/ and custom_nodes/ of its own,
    and the host's Python; without a host, a minimal ComfyUI folder and this Python."""
    root = tmp_path / "ComfyUI"
    root.mkdir()
    if HAVE_COMFYUI:
        for name in os.listdir(COMFYUI_DIR):
            if name not in ("models", "custom_nodes", "extra_model_paths.yaml", "user", "output", "input", "temp"):
                os.symlink(os.path.join(COMFYUI_DIR, name), root / name)
        python = COMFYUI_PYTHON
    else:
        (root / "main.py").write_text("")
        (root / "comfy").mkdir()
        python = sys.executable
    (root / "models").mkdir()
    (root / "custom_nodes").mkdir()
    return root, python


@pytest.fixture
def hub(monkeypatch, request):
    """The fake hub; pip's step is recorded instead of run (it imports torch and runs pip: seconds per
    call), except in a test marked ``real_pip``."""
    fake = FakeHub(FILES)
    fake.pip_calls = []
    if request.node.get_closest_marker("real_pip") is None:
        monkeypatch.setattr(fp_setup, "install_requirements",
                            lambda python, pack, say, dry_run: fake.pip_calls.append((python, pack, dry_run)))
    monkeypatch.setenv("HF_ENDPOINT", fake.url)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # the requirements are installed already: pip must not go online
    monkeypatch.setenv("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    yield fake
    fake.close()


def setup(comfy, *extra):
    root, python = comfy
    return main(["setup", "--comfyui", str(root), "--comfyui-python", python, *extra])


def placed(root):
    out = {}
    for dirpath, dirs, names in os.walk(root / "models"):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for n in names:
            if not n.startswith("."):
                out[n] = os.path.relpath(os.path.join(dirpath, n), root / "models")
    return out


@pytest.mark.real_pip
def test_files_land_where_comfyui_reads_them_and_a_second_run_downloads_nothing(comfy, hub, capsys):
    root, _ = comfy
    assert setup(comfy) == 0
    err = capsys.readouterr().err
    assert placed(root) == {
        "wan2.1_i2v_480p_14B_fp8_e4m3fn.safetensors": "diffusion_models/wan2.1_i2v_480p_14B_fp8_e4m3fn.safetensors",
        "umt5_xxl_fp8_e4m3fn_scaled.safetensors": "text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors",
        "clip_vision_h.safetensors": "clip_vision/clip_vision_h.safetensors",
        "wan_2.1_vae.safetensors": "vae/wan_2.1_vae.safetensors",
        "fantasyportrait_model.ckpt": "fantasyportrait/fantasyportrait_model.ckpt",
        "pd_fpg.pth": "fantasyportrait/pd_fpg.pth", "face_det.onnx": "fantasyportrait/face_det.onnx",
        "face_landmark.onnx": "fantasyportrait/face_landmark.onnx"}
    for name, rel in placed(root).items():
        assert (root / "models" / rel).read_bytes() == FILES[(WANTED[name].repo, WANTED[name].path)]
    pack = root / "custom_nodes" / "ComfyUI-FantasyPortrait"
    assert (pack / "__init__.py").is_file() and (pack / "workflows" / "api").is_dir() and not (pack / ".git").exists()
    assert "to download: 8 file(s)" in err and "free disk:" in err
    assert f"requirements: installing into {comfy[1]} (torch " in err  # pip ran, ComfyUI's torch held
    # install.py put the example inputs where the shipped templates load them; setup says how to animate them
    for name in ("portrait.jpg", "driver.mp4", "two_people.jpg", "two_people_driver.mp4", "driver_2.mp4"):
        assert (root / "input" / f"fantasyportrait_example_{name}").read_bytes() == \
            (pack / "examples" / name).read_bytes()
    assert f"fantasyportrait run --comfyui {root} --out fantasyportrait.mp4\n" in err
    gets = len(hub.gets)
    assert gets == 8
    assert setup(comfy) == 0
    err = capsys.readouterr().err
    assert len(hub.gets) == gets and "to download: 0 file(s)" in err and err.count("  present ") == 8


def test_extra_model_paths_are_respected(comfy, hub, tmp_path):
    root, python = comfy
    central = tmp_path / "central"
    (root / "extra_model_paths.yaml").write_text(
        f"farm:\n  base_path: {central}\n  is_default: true\n  diffusion_models: |\n    unets\n    more_unets\n"
        f"  fantasyportrait: portrait\n")
    (central / "portrait").mkdir(parents=True)
    shutil.copy(os.devnull, central / "portrait" / "keep")
    present = FILES[(fp_setup.FANTASY, "pd_fpg.pth")]
    (central / "portrait" / "pd_fpg.pth").write_bytes(present)  # already there: not downloaded again
    assert setup(comfy) == 0
    assert (central / "unets" / "wan2.1_i2v_480p_14B_fp8_e4m3fn.safetensors").is_file()
    assert (central / "portrait" / "face_det.onnx").is_file()
    assert not (root / "models" / "diffusion_models").exists()
    assert not any(path.endswith("pd_fpg.pth") for _, path, _ in hub.gets)
    pack = str(root / "custom_nodes" / "ComfyUI-FantasyPortrait")
    assert hub.pip_calls == [(python, pack, False)]  # the copied pack's requirements, into ComfyUI's Python


def test_an_interrupted_download_resumes_and_leaves_no_partial_file(comfy, hub, capsys):
    root, _ = comfy
    unet = fp_setup.model_files()[0]
    hub.cut[unet.path] = 100  # setup resumes a dropped connection a few times itself, then gives up
    assert setup(comfy) == 2
    err = capsys.readouterr().err
    assert "downloaded so far are kept" in err and "the next run resumes from there" in err
    assert not (root / "models" / "diffusion_models" / unet.name).exists()  # nothing under the final name
    hub.cut.clear()
    cut_gets = len(hub.gets)
    assert setup(comfy) == 0
    assert "resume" in capsys.readouterr().err
    ranges = [rng for repo, path, rng in hub.gets[cut_gets:] if path == unet.path]
    assert len(ranges) == 1 and ranges[0].startswith("bytes=") and int(ranges[0][6:-1]) > 0  # it went on from there
    assert (root / "models" / "diffusion_models" / unet.name).read_bytes() == FILES[(unet.repo, unet.path)]


def test_a_corrupted_file_is_detected_and_fetched_again(comfy, hub):
    root, _ = comfy
    assert setup(comfy) == 0
    vae = root / "models" / "vae" / "wan_2.1_vae.safetensors"
    good = vae.read_bytes()
    vae.write_bytes(b"\0" * len(good))  # same size, wrong bytes
    gets = len(hub.gets)
    assert setup(comfy) == 0
    assert vae.read_bytes() == good and len(hub.gets) == gets + 1


def test_a_full_disk_is_refused_before_downloading(comfy, hub, monkeypatch, capsys):
    monkeypatch.setattr(fp_setup, "free_bytes", lambda path: 1000)
    assert setup(comfy) == 2
    assert "Not enough disk space: the downloads need" in capsys.readouterr().err and not hub.gets


def test_dry_run_writes_nothing_and_works_offline(comfy, hub, monkeypatch, capsys):
    root, _ = comfy
    assert setup(comfy, "--dry-run", "--variant", "bf16", "--resolution", "720p") == 0
    err = capsys.readouterr().err
    assert "wan2.1_i2v_720p_14B_bf16.safetensors" in err and "dry run: nothing was installed or downloaded" in err
    assert "size unknown" not in err and "would copy" in err
    assert not placed(root) and not os.listdir(root / "custom_nodes") and not hub.gets
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: offline
    assert setup(comfy, "--dry-run") == 0
    err = capsys.readouterr().err
    assert err.count("size unknown") >= 8 and "Cannot reach the Hugging Face hub at http://127.0.0.1:9" in err
    assert not placed(root) and not os.listdir(root / "custom_nodes")


def test_fast_adds_the_distill_lora_and_prints_the_fast_workflow(comfy, hub, capsys):
    root, _ = comfy
    assert setup(comfy, "--fast") == 0
    err = capsys.readouterr().err
    lora = root / "models" / "loras" / fp_setup.DISTILL_LORA.name
    assert lora.read_bytes() == FILES[(fp_setup.DISTILL_LORA.repo, fp_setup.DISTILL_LORA.path)]
    assert "Kijai/WanVideo_comfy/Lightx2v/lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors" in err
    assert err.splitlines()[-1].endswith(" --workflow fast --out fantasyportrait.mp4")


def test_failures_are_named(comfy, hub, monkeypatch, tmp_path, capsys):
    root, _ = comfy
    assert main(["setup", "--comfyui", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is not a ComfyUI folder" in err and "comfy-cli" in err
    monkeypatch.setattr(fp_setup, "PACK_DIR", str(tmp_path / "somewhere" / "pack"))  # not in a custom_nodes/
    assert main(["setup"]) == 2
    err = capsys.readouterr().err
    assert "No ComfyUI found: this pack" in err and "pip install comfy-cli" in err and "comfy install" in err
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert setup(comfy) == 2
    assert "Cannot reach the Hugging Face hub at http://127.0.0.1:9" in capsys.readouterr().err
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    hub.gated.add(fp_setup.FANTASY)
    for key in [k for k in hub.files if k[0] == fp_setup.FANTASY]:
        del hub.files[key]
    assert setup(comfy) == 2
    err = capsys.readouterr().err
    assert "acvlab/FantasyPortrait/fantasyportrait_model.ckpt is gated" in err and "HF_TOKEN" in err
    hub.gated.clear()
    assert setup(comfy) == 2
    assert "The repository acvlab/FantasyPortrait does not exist" in capsys.readouterr().err
    hub.files.update({k: v for k, v in FILES.items() if k[0] == fp_setup.FANTASY})
    del hub.files[(fp_setup.WAN, "split_files/vae/wan_2.1_vae.safetensors")]
    assert setup(comfy) == 2
    assert "split_files/vae/wan_2.1_vae.safetensors is no longer in Comfy-Org/Wan_2.1_ComfyUI_repackaged" in \
        capsys.readouterr().err
    assert not placed(root)  # every check happens before anything is downloaded
