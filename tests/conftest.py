import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (ROOT, os.path.dirname(os.path.abspath(__file__))):
    if path not in sys.path:
        sys.path.insert(0, path)

# A real ComfyUI host for the tests that need one (see README, "Testing against a real ComfyUI").
COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
COMFYUI_PYTHON = os.environ.get("COMFYUI_PYTHON", sys.executable)
HAVE_COMFYUI = bool(COMFYUI_DIR) and os.path.isfile(os.path.join(COMFYUI_DIR, "main.py"))
if os.environ.get("FANTASYPORTRAIT_REQUIRE_COMFYUI") and not HAVE_COMFYUI:
    # CI sets this: a missing host must fail the run, not silently skip the real-ComfyUI tests
    raise pytest.UsageError(f"FANTASYPORTRAIT_REQUIRE_COMFYUI is set but COMFYUI_DIR ({COMFYUI_DIR!r}) is not a "
                            "ComfyUI checkout; build one with ../shared/host/setup-comfyui.sh")
#: the marks of a test that needs the real host: marker ``comfyui`` (``.ci/run`` runs ``-m comfyui`` again on each
#: further ComfyUI release) and a skip with the reason when there is no host
requires_comfyui = [pytest.mark.comfyui, pytest.mark.skipif(
    not HAVE_COMFYUI,
    reason="needs a real ComfyUI: set COMFYUI_DIR to a ComfyUI checkout and COMFYUI_PYTHON to its Python "
           "(../shared/host/setup-comfyui.sh builds one)")]


def pytest_configure(config):
    config.addinivalue_line("markers", "comfyui: needs a real ComfyUI (COMFYUI_DIR); run on every tested release")
    config.addinivalue_line("markers", "real_pip: setup's pip step really runs (tests/test_setup.py records it "
                                       "otherwise)")


@pytest.fixture(scope="session")
def tiny_models_base(tmp_path_factory):
    """A ComfyUI base folder whose models/ holds the tiny test models (written once per session: the
    random full-size Wan VAE alone is 250 MB); servers link it with ``make_base(..., models_from=...)``."""
    from comfy_servers import make_base

    return make_base(tmp_path_factory.mktemp("tiny_models") / "base")


@pytest.fixture
def tiny_adapter_state():
    from checkpoint_factory import adapter_state_dict

    return adapter_state_dict()
