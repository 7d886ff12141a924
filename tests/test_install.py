"""A normal (non-editable) install: the wheel built from the project's own files, in a new venv. Its command line
works, finds the shipped workflows in the package, and ``setup`` never copies site-packages into ComfyUI: it
refuses, saying how to put the pack there, or uses the pack already in custom_nodes/."""

import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

SOURCES = ("pyproject.toml", "README.md", "fantasyportrait_core", "fantasyportrait_tools", "workflows", "examples")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A venv (seeing this Python's packages, not the project) with the project's wheel installed; the wheel is
    built from a copy of the sources, so nothing is written into the work tree."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    for name in SOURCES:
        path = os.path.join(ROOT, name)
        if os.path.isdir(path):
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy(path, src / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(tmp / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = (tmp / "dist").glob("*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(tmp / "venv")], check=True,
                   timeout=120)
    python = str(tmp / "venv" / "bin" / "python")
    done = subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp, python


def test_every_package_of_the_tree_is_in_the_wheel():
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11")

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as fh:
        listed = set(tomllib.load(fh)["tool"]["setuptools"]["packages"])
    found = {os.path.relpath(d, ROOT).replace(os.sep, ".") for top in ("fantasyportrait_core", "fantasyportrait_tools")
             for d, _, files in os.walk(os.path.join(ROOT, top)) if "__init__.py" in files}
    assert listed == found | {"fantasyportrait_tools.workflows", "fantasyportrait_tools.examples"}


def test_the_wheel_holds_the_tools_and_the_shipped_workflows(installed):
    tmp, python = installed
    where = subprocess.run([python, "-c", "import fantasyportrait_tools as t; print(t.PACK_DIR); "
                            "print(t.shipped_workflow('fantasyportrait_single'))"], capture_output=True, text=True,
                           cwd=tmp, timeout=60)
    assert where.returncode == 0, where.stderr
    pack_dir, workflow = where.stdout.split()
    assert "site-packages" in pack_dir and workflow.startswith(pack_dir)  # from the package, not a checkout
    with open(workflow, "rb") as fh, open(os.path.join(ROOT, "workflows", "api", "fantasyportrait_single_api.json"),
                                          "rb") as ours:
        assert fh.read() == ours.read()
    # the example inputs too: run with no --image/--video animates them after a normal install
    found = subprocess.run([python, "-c", "from fantasyportrait_tools.example_inputs import for_workflow; "
                            "image, videos = for_workflow('people_from_videos'); print(image, *videos)"],
                           capture_output=True, text=True, cwd=tmp, timeout=60)
    assert found.returncode == 0, found.stderr
    files = found.stdout.split()
    assert [os.path.basename(f) for f in files] == ["two_people.jpg", "driver.mp4", "driver_2.mp4"]
    for f in files:
        assert f.startswith(pack_dir)
        with open(f, "rb") as fh, open(os.path.join(ROOT, "examples", os.path.basename(f)), "rb") as ours:
            assert fh.read() == ours.read()
    script = tmp / "venv" / "bin" / "fantasyportrait"
    shown = subprocess.run([str(script), "run", "--help"], capture_output=True, text=True, cwd=tmp, timeout=60)
    assert shown.returncode == 0 and "usage: fantasyportrait run" in shown.stdout, shown.stderr


def test_setup_never_copies_site_packages_into_comfyui(installed):
    tmp, python = installed
    comfy = tmp / "ComfyUI"
    (comfy / "comfy").mkdir(parents=True)
    (comfy / "main.py").write_text("")
    (comfy / "custom_nodes").mkdir()
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    script = str(tmp / "venv" / "bin" / "fantasyportrait")

    def setup():
        return subprocess.run([script, "setup", "--comfyui", str(comfy), "--comfyui-python", python, "--dry-run"],
                              capture_output=True, text=True, cwd=tmp, env=env, timeout=120)

    refused = setup()
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "is installed as a Python package" in refused.stderr and "git clone" in refused.stderr
    assert "site-packages to" not in refused.stdout + refused.stderr
    assert os.listdir(comfy / "custom_nodes") == []  # nothing copied
    # with the pack cloned into custom_nodes/ (a git clone or a registry zip), setup uses that one
    pack = comfy / "custom_nodes" / "ComfyUI-FantasyPortrait"
    shutil.copytree(ROOT, pack, ignore=shutil.ignore_patterns(".git", "__pycache__", "tests", "benchmarks"))
    used = setup()
    assert used.returncode == 0, used.stdout + used.stderr
    said = used.stdout + used.stderr
    assert f"pack: already in {pack}" in said
    assert f"{pack}{os.sep}requirements.txt" in said  # its own requirements, not site-packages'


def _install_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("fp_install", os.path.join(ROOT, "install.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Dist:
    def __init__(self, name, version):
        self.metadata, self.version = {"Name": name}, version


@pytest.mark.parametrize("present, installs", [
    ([("onnxruntime-gpu", "1.22.0"), ("numpy", "2.1")], None),  # a CUDA build is kept, nothing beside it
    ([("onnxruntime_directml", "1.20.0")], None),
    ([("onnxruntime", "1.23.2")], None),
    ([("numpy", "2.1")], "onnxruntime"),  # none at all: the CPU build
])
def test_install_py_adds_onnx_runtime_only_where_none_is_installed(monkeypatch, capsys, present, installs):
    """requirements.txt names no ONNX Runtime (a ComfyUI with onnxruntime-gpu would get the conflicting CPU build
    beside it); install.py, which ComfyUI-Manager and setup run, installs one only where none is."""
    with open(os.path.join(ROOT, "requirements.txt")) as fh:
        assert not [line for line in fh if line.strip().startswith("onnxruntime")]
    script = _install_script()
    monkeypatch.setattr(script.importlib.metadata, "distributions", lambda: [_Dist(n, v) for n, v in present])
    calls = []
    monkeypatch.setattr(script.subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    assert script.main([]) == 0
    said = capsys.readouterr().out
    if installs is None:
        assert calls == [] and "ONNX Runtime is installed" in said and present[0][0].replace("_", "-") in said
    else:
        assert calls == [[sys.executable, "-m", "pip", "install", installs]]
    assert script.main(["--dry-run"]) == 0 and len(calls) == (0 if installs is None else 1)  # dry run: no pip


def test_install_py_copies_the_examples_into_comfyuis_input_folder(tmp_path):
    """Installed by the Manager (or comfy-cli, or setup), install.py copies the example inputs into ComfyUI's input
    folder under the names the shipped templates load; a file of that name already there is left alone."""
    comfy = tmp_path / "ComfyUI"
    (comfy / "input").mkdir(parents=True)
    (comfy / "main.py").write_text("")
    pack = comfy / "custom_nodes" / "ComfyUI-FantasyPortrait"
    shutil.copytree(ROOT, pack, ignore=shutil.ignore_patterns(".git", "__pycache__", "tests", "benchmarks"))
    (comfy / "input" / "fantasyportrait_example_driver.mp4").write_bytes(b"the user's own")
    done = subprocess.run([sys.executable, str(pack / "install.py")], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(comfy / "input")) == [f"fantasyportrait_example_{n}" for n in (
        "driver.mp4", "driver_2.mp4", "portrait.jpg", "two_people.jpg", "two_people_driver.mp4")]
    assert (comfy / "input" / "fantasyportrait_example_driver.mp4").read_bytes() == b"the user's own"
    assert (comfy / "input" / "fantasyportrait_example_portrait.jpg").read_bytes() == \
        (pack / "examples" / "portrait.jpg").read_bytes()
    again = subprocess.run([sys.executable, str(pack / "install.py")], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "examples: copied" not in again.stdout, again.stdout


def test_a_pack_in_comfyui_portables_layout_finds_its_comfyui_and_python(tmp_path):
    """ComfyUI portable: ``python_embeded/`` beside ``ComfyUI/``, the pack in ``ComfyUI/custom_nodes/`` (a git clone
    or the Manager's copy). Run from there, setup finds that ComfyUI and the portable Python (never this one), and
    the pack's shipped workflows are its own."""
    portable = tmp_path / "ComfyUI_windows_portable"
    comfy = portable / "ComfyUI"
    (comfy / "comfy").mkdir(parents=True)
    (comfy / "main.py").write_text("")
    pack = comfy / "custom_nodes" / "ComfyUI-FantasyPortrait"
    shutil.copytree(ROOT, pack, ignore=shutil.ignore_patterns(".git", "__pycache__", "tests", "benchmarks"))
    embedded = portable / "python_embeded" / "python.exe"  # a stand-in that runs this Python
    embedded.parent.mkdir()
    embedded.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    embedded.chmod(0o755)
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    done = subprocess.run([sys.executable, "-m", "fantasyportrait_tools", "setup", "--dry-run"], cwd=pack,
                          capture_output=True, text=True, env=env, timeout=120)
    said = done.stdout + done.stderr
    assert done.returncode == 0, said
    assert f"pack: already in {comfy / 'custom_nodes'}" in said
    assert f"{embedded} -m pip install -r {pack / 'requirements.txt'}" in said
    where = subprocess.run([sys.executable, "-c", "import fantasyportrait_tools as t; "
                            "print(t.shipped_workflow('fantasyportrait_single'))"], cwd=pack, capture_output=True,
                           text=True, timeout=60)
    assert where.stdout.strip() == str(pack / "workflows" / "api" / "fantasyportrait_single_api.json")


def test_an_editable_install_works_from_the_checkout(tmp_path):
    """``pip install -e .`` (of a copy of the checkout, so the work tree is not written): the command runs from the
    checkout, which is the pack itself, with its own shipped workflows."""
    src = tmp_path / "ComfyUI-FantasyPortrait"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", "build"))
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(tmp_path / "venv")],
                   check=True, timeout=120)
    python = str(tmp_path / "venv" / "bin" / "python")
    done = subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps",
                           "--no-build-isolation", "-e", str(src)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    where = subprocess.run([python, "-c", "import fantasyportrait_tools as t; print(t.PACK_DIR, t.is_pack(t.PACK_DIR), "
                            "t.shipped_workflow('fantasyportrait_single'))"], capture_output=True, text=True,
                           cwd=tmp_path, timeout=60)
    assert where.stdout.split() == [str(src), "True", str(src / "workflows" / "api" / "fantasyportrait_single_api.json")]
    shown = subprocess.run([str(tmp_path / "venv" / "bin" / "fantasyportrait"), "run", "--help"], capture_output=True,
                           text=True, cwd=tmp_path, timeout=60)
    assert shown.returncode == 0 and "usage: fantasyportrait run" in shown.stdout, shown.stderr
