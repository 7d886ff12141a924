"""The pack imports without ComfyUI and hands its nodes to ComfyUI through the V3 entry point only.

(That the entry point gives ComfyUI every node, as io.ComfyNode classes, is checked in a real ComfyUI:
tests/host_nodes.py::test_the_nodes_come_through_the_v3_entry_point.)"""

import glob
import importlib.util
import os
import re
import sys

from conftest import ROOT


def test_pack_init_imports_without_comfyui():
    """Outside ComfyUI (tests, the command line) the pack imports, loads no node module (they need
    ComfyUI) and offers no entry point; its web folder holds one doc page per node module's node."""
    assert "comfy" not in sys.modules
    module = _load_pack("fantasyportrait_pack")
    assert not hasattr(module, "comfy_entrypoint")
    assert not hasattr(module, "NODE_CLASS_MAPPINGS")  # ComfyUI would read it instead of comfy_entrypoint
    assert not any(name.startswith("fantasyportrait_pack.nodes") for name in sys.modules)
    docs = os.path.join(ROOT, module.WEB_DIRECTORY, "docs")
    ids = set()
    for path in glob.glob(os.path.join(ROOT, "nodes", "nodes_*.py")):
        with open(path) as fh:
            ids |= set(re.findall(r"^class (\w+)\(io\.ComfyNode\)", fh.read(), re.M))
    assert len(ids) == 13
    assert sorted(f"{i}.md" for i in ids) == sorted(os.listdir(docs))


def test_minimum_comfyui_version_is_declared_and_checked():
    module = _load_pack("fantasyportrait_pack_v")
    with open(os.path.join(ROOT, "pyproject.toml")) as fh:
        declared = [line for line in fh if line.startswith("requires-comfyui")]
    assert declared == ['requires-comfyui = ">=0.3.64"\n']
    assert module.MIN_COMFYUI == (0, 3, 64)
    message = module.comfyui_too_old("0.3.60")
    assert "needs ComfyUI 0.3.64 or newer, this is 0.3.60" in message and "not loaded" in message
    assert module.comfyui_too_old("0.3.64") is None and module.comfyui_too_old("0.38.1") is None
    assert module.comfyui_too_old("0.4.0") is None and module.comfyui_too_old("1.0.0-rc1") is None
    assert module.comfyui_too_old("0.45.2") is None  # newer than any release it was run on: never refused


def test_the_log_says_which_releases_were_run_and_which_only_read():
    module = _load_pack("fantasyportrait_pack_notes")
    with open(os.path.join(ROOT, ".ci", "run")) as fh:  # the releases CI runs on are the ones named
        ci = re.search(r"^HOST_VERSIONS=\((.*)\)$", fh.read(), re.M).group(1).split()
    assert list(module.RUN_ON) == ci == ["0.3.64", "0.3.75"]
    assert module.comfyui_tested_note("0.3.75") == ("FantasyPortrait: ComfyUI 0.3.75, a release the pack is tested "
                                                    "on (0.3.64, 0.3.75).")
    assert "tested on 0.3.64, 0.3.75 (releases between them" in module.comfyui_tested_note("0.3.70")
    newer = module.comfyui_tested_note("0.45.2")
    assert "ComfyUI 0.45.2 is newer than the releases the pack is tested on (0.3.64, 0.3.75)" in newer
    assert "checked in the sources up to 0.38.1" in newer
    assert "newer than the releases" in module.comfyui_tested_note("0.3.76-dev")
    assert "a release the pack is tested on" in module.comfyui_tested_note("0.3.75-1")  # a packaging of 0.3.75
    assert "does not say its release (None)" in module.comfyui_tested_note(None)


def _load_pack(name):
    """Import the pack's ``__init__.py`` as package ``name`` (as ComfyUI does), then forget it."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "__init__.py"),
                                                  submodule_search_locations=[ROOT])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]
    return module


def test_inside_a_broken_or_old_comfyui_the_pack_reports_instead_of_raising(monkeypatch, caplog):
    """Inside ComfyUI (a ``comfy`` module is importable) a node module that fails to import is logged and
    leaves the mappings empty, and a ComfyUI older than the minimum is named; neither raises."""
    import types

    monkeypatch.setitem(sys.modules, "comfy", types.ModuleType("comfy"))  # not a package: node imports fail
    monkeypatch.setitem(sys.modules, "comfyui_version", types.SimpleNamespace(__version__="0.3.64"))
    with caplog.at_level("ERROR"):
        module = _load_pack("fantasyportrait_pack_broken")
    assert not hasattr(module, "comfy_entrypoint")  # ComfyUI then lists the pack as failed, and goes on
    assert "FantasyPortrait: the nodes could not be loaded" in caplog.text and "comfy" in caplog.text
    caplog.clear()
    monkeypatch.setitem(sys.modules, "comfyui_version", types.SimpleNamespace(__version__="0.3.40"))
    with caplog.at_level("ERROR"):
        module = _load_pack("fantasyportrait_pack_old")
    assert not hasattr(module, "comfy_entrypoint")
    assert "needs ComfyUI 0.3.64 or newer, this is 0.3.40" in caplog.text
    assert "could not be loaded" not in caplog.text  # an old ComfyUI is not even tried
