"""``fantasyportrait setup``: ComfyUI, the pack and every model file the shipped workflows need, in place.

A tool on top of the pack: it finds (never installs) ComfyUI, copies the pack into its
``custom_nodes/``, installs the pack's requirements into ComfyUI's Python with that Python's torch
pinned, and downloads the model files from their Hugging Face repositories with the
``huggingface_hub`` client into the folders ComfyUI reads (``extra_model_paths.yaml`` included).
Downloads go to a staging folder beside their target (``.fantasyportrait-download/NAME.part``) and
are moved under their final name only once their SHA-256 matches the hub's, so an interrupted run
leaves no partial file where ComfyUI looks, and the next run resumes it with an HTTP range request.
``huggingface_hub`` gives the file URLs, sizes, checksums, auth headers and error types. ``HF_ENDPOINT`` and ``HF_TOKEN`` are honoured (mirrors, gated files).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Callable

from fantasyportrait_core.errors import FantasyPortraitError, require
from fantasyportrait_core.sizing import RESOLUTIONS
from . import PACK_DIR, is_pack
from .hub import STAGING, STATE, ModelFile, Step, Verified, download, free_bytes, look_up, size_text
from .private import comfyui_python
from .workflow import load_workflow

PACK_NAME = "ComfyUI-FantasyPortrait"
WAN = "Comfy-Org/Wan_2.1_ComfyUI_repackaged"
FANTASY = "acvlab/FantasyPortrait"
#: lightx2v's step/cfg-distill LoRA for Wan 2.1 I2V 480p (4 steps, cfg 1), as ComfyUI users get it: the fast workflow
DISTILL_LORA = ModelFile("Kijai/WanVideo_comfy", "Lightx2v/lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors",
                         "loras")
#: ComfyUI folders and the legacy folder names it also reads for them
ALIASES = {"diffusion_models": ("diffusion_models", "unet"), "text_encoders": ("text_encoders", "clip")}


def model_files(variant: str = "fp8", resolution: str = "480p", fast: bool = False) -> list[ModelFile]:
    """The files the shipped workflows need (the pack's own list: repository, path, target folder); ``fast``: also
    the distill LoRA of the fast workflow."""
    if variant not in ("fp8", "bf16") or resolution not in RESOLUTIONS:
        raise FantasyPortraitError(f"--variant must be fp8 or bf16 and --resolution 480p or 720p; got {variant} and "
                                   f"{resolution}.")
    unet = f"wan2.1_i2v_{resolution}_14B_{'fp8_e4m3fn' if variant == 'fp8' else 'bf16'}.safetensors"
    return [
        ModelFile(WAN, f"split_files/diffusion_models/{unet}", "diffusion_models"),
        ModelFile(WAN, "split_files/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors", "text_encoders"),
        ModelFile(WAN, "split_files/clip_vision/clip_vision_h.safetensors", "clip_vision"),
        ModelFile(WAN, "split_files/vae/wan_2.1_vae.safetensors", "vae"),
        ModelFile(FANTASY, "fantasyportrait_model.ckpt", "fantasyportrait"),
        ModelFile(FANTASY, "pd_fpg.pth", "fantasyportrait"),
        ModelFile(FANTASY, "face_det.onnx", "fantasyportrait"),
        ModelFile(FANTASY, "face_landmark.onnx", "fantasyportrait"),
    ] + ([DISTILL_LORA] if fast else [])


# --------------------------------------------------------------------------------------------
# ComfyUI and its folders

NO_COMFYUI = ("Install ComfyUI first, e.g. with comfy-cli (`pip install comfy-cli`, then `comfy install`), the "
              "desktop or portable build, or `git clone https://github.com/comfyanonymous/ComfyUI` and its "
              "requirements; then run `fantasyportrait setup --comfyui PATH/TO/ComfyUI`.")


def find_comfyui(explicit: str | None) -> str:
    from .private import find_comfyui as find

    try:
        return find(explicit, PACK_DIR, f"No ComfyUI found: this pack ({PACK_DIR}) is not inside a ComfyUI's "
                                        "custom_nodes/ folder and no --comfyui DIR was given.")
    except FantasyPortraitError as exc:
        raise FantasyPortraitError(f"{exc}\n{NO_COMFYUI}") from None


def model_dirs(comfy_dir: str) -> dict[str, list[str]]:
    """folder name -> the directories ComfyUI reads it from, the one to download into first: paths from
    ``extra_model_paths.yaml`` (``is_default`` sections first), then ``models/<folder>``."""
    found: dict[str, list[str]] = {}
    yaml_path = os.path.join(comfy_dir, "extra_model_paths.yaml")
    if os.path.isfile(yaml_path):
        yaml = require("yaml", "Reading extra_model_paths.yaml", "pyyaml")
        with open(yaml_path, encoding="utf-8") as fh:
            config = yaml.safe_load(fh) or {}
        sections = sorted((c for c in config.values() if isinstance(c, dict)), key=lambda c: not c.get("is_default"))
        for conf in sections:
            base = conf.get("base_path")
            if base:
                base = os.path.expandvars(os.path.expanduser(base))
                base = base if os.path.isabs(base) else os.path.join(comfy_dir, base)
            for folder, value in conf.items():
                if folder in ("base_path", "is_default") or not isinstance(value, str):
                    continue
                for line in value.split("\n"):
                    if line.strip():
                        path = os.path.join(base, line.strip()) if base else os.path.join(comfy_dir, line.strip())
                        found.setdefault(folder, []).append(os.path.normpath(path))
    out = {}
    for folder in {f.folder for f in model_files(fast=True)} | set(found):
        names = ALIASES.get(folder, (folder,))
        paths = [p for n in names for p in found.get(n, [])]
        paths += [os.path.join(comfy_dir, "models", n) for n in names]
        out[folder] = list(dict.fromkeys(paths))
    return out


# --------------------------------------------------------------------------------------------
# the command


def plan(files: list[ModelFile], dirs: dict[str, list[str]], verified: Verified | None) -> list[Step]:
    steps = []
    for item in files:
        candidates = dirs.get(item.folder) or [item.folder]
        present = None
        for folder in candidates:
            path = os.path.join(folder, item.name)
            if os.path.isfile(path) and (item.size is None or os.path.getsize(path) == item.size):
                if verified is None or item.size is None or verified.matches(path, item.sha256):
                    present = path
                    break
        target = present or os.path.join(candidates[0], item.name)
        part = os.path.join(os.path.dirname(target), STAGING, item.name + ".part")
        partial = os.path.getsize(part) if present is None and os.path.isfile(part) else 0
        steps.append(Step(item, target, present, partial))
    return steps


def install_pack(comfy_dir: str, say: Callable[[str], None], dry_run: bool) -> str:
    """Copy the pack's own folder into ComfyUI's custom_nodes/ (unless it already lives there). Installed as a
    Python package (site-packages holds only the command line), the pack must already be in custom_nodes/, or
    setup refuses and says how to put it there; it never copies a site-packages folder."""
    custom = os.path.join(comfy_dir, "custom_nodes")
    target = os.path.join(custom, PACK_NAME)
    if is_pack(PACK_DIR) and os.path.dirname(PACK_DIR) == os.path.abspath(custom):
        say(f"pack: already in {custom}")
        return PACK_DIR
    if not is_pack(PACK_DIR):
        if is_pack(target):
            say(f"pack: already in {target}")
            return target
        raise FantasyPortraitError(
            f"This fantasyportrait is installed as a Python package ({PACK_DIR}), which holds the command line but not "
            f"the ComfyUI nodes, and {custom} has no FantasyPortrait pack. Put the pack there first: git clone "
            f"https://github.com/fantasyportrait-comfy/ComfyUI-FantasyPortrait {target} (or install it with "
            "ComfyUI-Manager), then run fantasyportrait setup again.")
    if dry_run:
        say(f"pack: would copy {PACK_DIR} to {target}")
        return target
    ignore = shutil.ignore_patterns(".git", "__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache")
    if os.path.isdir(target):
        shutil.rmtree(target)
    shutil.copytree(PACK_DIR, target, ignore=ignore, symlinks=True)
    say(f"pack: copied to {target}")
    return target


def install_requirements(python: str, pack: str, say: Callable[[str], None], dry_run: bool) -> None:
    """The pack's requirements into ComfyUI's Python, with that Python's torch pinned so pip never
    replaces it (a CUDA build stays a CUDA build)."""
    probe = subprocess.run([python, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True)
    if probe.returncode:
        raise FantasyPortraitError(f"{python} has no torch: that is not ComfyUI's Python (give --comfyui-python), or "
                                   "ComfyUI's requirements are not installed yet.")
    torch_version = probe.stdout.strip()
    requirements = os.path.join(pack, "requirements.txt")
    cmd = [python, "-m", "pip", "install", "-r", requirements]
    if dry_run:
        say(f"requirements: would run {' '.join(cmd)} with torch=={torch_version} held")
        onnx = subprocess.run([python, os.path.join(pack, "install.py"), "--dry-run"], capture_output=True, text=True)
        say(f"requirements: {onnx.stdout.strip()}")
        return
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
        fh.write(f"torch=={torch_version}\n")
    try:
        say(f"requirements: installing into {python} (torch {torch_version} held)")
        done = subprocess.run(cmd + ["-c", fh.name], capture_output=True, text=True)
    finally:
        os.unlink(fh.name)
    if done.returncode:
        raise FantasyPortraitError(f"pip could not install the pack's requirements into {python}:\n"
                                   f"{done.stdout[-1500:]}{done.stderr[-1500:]}")
    onnx = subprocess.run([python, os.path.join(pack, "install.py")], capture_output=True, text=True)
    say(f"requirements: {onnx.stdout.strip()}")  # ONNX Runtime, unless a build (e.g. onnxruntime-gpu) is there
    if onnx.returncode:
        raise FantasyPortraitError(f"ONNX Runtime could not be installed into {python}:\n{onnx.stderr[-1500:]}")


def run_setup(comfyui: str | None = None, python: str | None = None, variant: str = "fp8", resolution: str = "480p",
              dry_run: bool = False, say: Callable[[str], None] = print, fast: bool = False) -> int:
    comfy_dir = find_comfyui(comfyui)
    say(f"ComfyUI: {comfy_dir}")
    files = model_files(variant, resolution, fast)
    dirs = model_dirs(comfy_dir)
    notes = look_up(files, offline_ok=dry_run)
    verified = Verified(os.path.join(comfy_dir, "models", STATE))
    steps = plan(files, dirs, None if dry_run else verified)
    python = comfyui_python(comfy_dir, python)
    todo = [s for s in steps if s.present is None]
    need = sum((s.item.size or 0) - s.partial for s in todo)
    for s in steps:
        state = "present" if s.present else ("resume" if s.partial else "download")
        extra = f", {size_text(s.partial)} already downloaded" if s.partial and not s.present else ""
        say(f"  {state:8} {s.item.repo}/{s.item.path} -> {s.target} ({size_text(s.item.size)}{extra})")
    free = free_bytes(os.path.dirname(todo[0].target)) if todo else None
    unknown = [s for s in todo if s.item.size is None]
    say(f"to download: {len(todo)} file(s), {size_text(need)}" + (f" + {len(unknown)} of unknown size" if unknown else "")
        + (f"; free disk: {size_text(free)}" if free is not None else ""))
    for note in notes:
        say(f"  (size not looked up: {note})")
    if not dry_run and free is not None and need > free:
        raise FantasyPortraitError(f"Not enough disk space: the downloads need {size_text(need)} but "
                                   f"{os.path.dirname(todo[0].target)} has {size_text(free)} free. Free some space (or "
                                   "point the model folders elsewhere in extra_model_paths.yaml) and run setup again.")
    pack = install_pack(comfy_dir, say, dry_run)
    install_requirements(python, PACK_DIR if dry_run and is_pack(PACK_DIR) else pack, say, dry_run)
    if dry_run:
        say("dry run: nothing was installed or downloaded")
        return 0
    done_bytes = 0
    for k, step in enumerate(todo, 1):
        say(f"[{k}/{len(todo)}] {step.item.name} ({size_text(step.item.size)}; {size_text(done_bytes)} of {size_text(need)} done)")
        download(step, verified, say)
        done_bytes += (step.item.size or 0) - step.partial
    say("all model files are in place")
    unet = files[0].name
    workflow = os.path.join(pack, "workflows", "api", f"fantasyportrait_{'fast' if fast else 'single'}_api.json")
    shipped = load_workflow(workflow)  # the shipped graph's own model file and resolution
    extra = "" if unet in [n["inputs"].get("unet_name") for n in shipped.values()] else \
        f" --set UNETLoader.unet_name={unet}"
    if resolution not in [n["inputs"].get("resolution") for n in shipped.values()]:
        extra += f" --set FantasyPortraitOutputSize.resolution={resolution}"
    say("animate the pack's example portrait with its example driving clip (add --image YOURS.png --video "
        "YOURS.mp4 for your own; the templates in ComfyUI's browser load the same examples):")
    say(f"  fantasyportrait run --comfyui {comfy_dir}{' --workflow fast' if fast else ''} --out fantasyportrait.mp4"
        f"{extra}")
    return 0
