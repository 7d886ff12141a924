"""The pack imports without ComfyUI and exposes ComfyUI's entry-point names."""

import importlib.util
import os
import sys

from conftest import ROOT


def test_pack_init_imports_without_comfyui():
    assert "comfy" not in sys.modules
    spec = importlib.util.spec_from_file_location(
        "fantasyportrait_pack", os.path.join(ROOT, "__init__.py"),
        submodule_search_locations=[ROOT])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    assert isinstance(module.NODE_CLASS_MAPPINGS, dict)
    assert isinstance(module.NODE_DISPLAY_NAME_MAPPINGS, dict)
