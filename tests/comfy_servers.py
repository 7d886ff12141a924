"""Real ComfyUI servers for the end-to-end tests: a base folder with the pack, the test-only nodes and
the tiny models, and headless servers on free loopback ports."""

import os
import subprocess

from conftest import COMFYUI_DIR, ROOT
from conftest import COMFYUI_PYTHON as PYTHON


#: every node of the pack and its family (category FantasyPortrait/<family>)
FAMILIES = {"FantasyPortraitModelLoader": "loaders", "FantasyPortraitFaceModelLoader": "loaders",
            "FantasyPortraitFaceTracker": "faces", "FantasyPortraitExpressionExtractor": "faces",
            "FantasyPortraitMotionControl": "motion", "FantasyPortraitEncode": "embeds",
            "FantasyPortraitMultiCombine": "embeds", "FantasyPortraitOutputSize": "embeds",
            "FantasyPortraitApply": "sampling", "FantasyPortraitGuider": "sampling", "FantasyPortraitSampler": "sampling",
            "FantasyPortraitLongVideo": "sampling", "FantasyPortraitMotionCheck": "check"}

#: ``--set`` overrides pointing a shipped workflow at the tiny test models (tests/comfy_models.py), by node class
TINY_MODELS = ["UNETLoader.unet_name=tiny_wan_i2v.safetensors", "CLIPLoader.clip_name=fp_test_umt5.safetensors",
               "CLIPVisionLoader.clip_name=fp_test_clip_h.safetensors"]


def shipped_path(name: str) -> str:
    """The API file of a shipped workflow (``fantasyportrait_single``, ...)."""
    return os.path.join(ROOT, "workflows", "api", f"{name}_api.json")


def node_ids(name: str, cls: str) -> list[str]:
    """The ids of a shipped workflow's nodes of class ``cls``, in the runner's node order."""
    from fantasyportrait_tools.workflow import load_workflow, nodes_of_class

    return nodes_of_class(load_workflow(shipped_path(name)), cls)


def tiny_sets(name: str, length: int = 9) -> list[str]:
    """``--set`` items for a shipped workflow on the tiny models: their files, and every Face Tracker on a
    ``length``-frame window."""
    return TINY_MODELS + [f"{i}.length={length}" for i in node_ids(name, "FantasyPortraitFaceTracker")]


def make_base(base, models_from=None, test_nodes=True):
    """``base``/custom_nodes with this pack (and the test-only nodes); ``base``/models with the tiny models,
    made by tests/comfy_models.py, or linked from another base folder (``models_from``)."""
    from media import models_dir

    (base / "custom_nodes").mkdir(parents=True)
    os.symlink(ROOT, base / "custom_nodes" / "ComfyUI-FantasyPortrait")
    if test_nodes:
        os.symlink(os.path.join(ROOT, "tests", "comfy_test_nodes"), base / "custom_nodes" / "fp_test_nodes")
    if models_from is not None:
        os.symlink(models_from / "models", base / "models")
    elif test_nodes:
        made = subprocess.run([PYTHON, os.path.join(ROOT, "tests", "comfy_models.py"), COMFYUI_DIR, str(base),
                               models_dir(), ROOT], capture_output=True, text=True, timeout=600)
        assert made.returncode == 0, made.stderr[-3000:]
    return base


class ComfyServer:
    """A headless ComfyUI on ``base``, started by the runner's own :class:`PrivateServer` (the one ``run`` and
    ``batch`` start), its output in ``log_path``: ``url``, ``log`` (path), ``proc``, ``stop()``, ``kill()``."""

    def __init__(self, base, log_path, frontend_root=None, env=None):
        from fantasyportrait_tools.private import PrivateServer

        self.base, self.log = base, log_path
        front = [] if frontend_root is None else ["--front-end-root", str(frontend_root)]
        self.server = PrivateServer(COMFYUI_DIR, PYTHON, ["--cpu", "--disable-api-nodes", "--use-pytorch-cross-attention",
                                                          "--base-directory", str(base), *front],
                                    ready_timeout=120, log_path=str(log_path), env=env)
        self.url = self.server.__enter__()  # a server that did not come up is stopped, and its log tail raised
        self.proc = self.server.proc

    def kill(self):
        self.proc.kill()
        self.server.__exit__(None, None, None)

    def stop(self):
        self.server.__exit__(None, None, None)


def two_person_clip(folder) -> str:
    """The first 12 frames of two_person.mp4 (23 fps, no audio) in ``folder``: a short two-person driver
    keeps the end-to-end runs quick."""
    from fantasyportrait_core.video import write_video
    from media import media_path, read_frames

    clip = folder / "two_person_12.mp4"
    if not clip.exists():
        write_video(str(clip), read_frames(media_path("two_person.mp4"), max_frames=12), 23)
    return str(clip)
