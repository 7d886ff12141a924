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

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Callable

from ..errors import FantasyPortraitError, require
from ..sizing import RESOLUTIONS
from . import PACK_DIR, file_sha256
from .runner import comfyui_python, load_workflow

PACK_NAME = "ComfyUI-FantasyPortrait"
WAN = "Comfy-Org/Wan_2.1_ComfyUI_repackaged"
FANTASY = "acvlab/FantasyPortrait"
STAGING = ".fantasyportrait-download"
STATE = ".fantasyportrait-verified.json"
#: ComfyUI folders and the legacy folder names it also reads for them
ALIASES = {"diffusion_models": ("diffusion_models", "unet"), "text_encoders": ("text_encoders", "clip")}


@dataclass
class ModelFile:
    repo: str
    path: str      # inside the repository
    folder: str    # ComfyUI model folder
    size: int | None = None
    sha256: str | None = None

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


def model_files(variant: str = "fp8", resolution: str = "480p") -> list[ModelFile]:
    """The files the shipped workflows need (the pack's own list: repository, path, target folder)."""
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
    ]


# --------------------------------------------------------------------------------------------
# ComfyUI and its folders

NO_COMFYUI = ("Install ComfyUI first, e.g. with comfy-cli (`pip install comfy-cli`, then `comfy install`), the "
              "desktop or portable build, or `git clone https://github.com/comfyanonymous/ComfyUI` and its "
              "requirements; then run `fantasyportrait setup --comfyui PATH/TO/ComfyUI`.")


def find_comfyui(explicit: str | None) -> str:
    from .runner import find_comfyui as find

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
    for folder in {f.folder for f in model_files()} | set(found):
        names = ALIASES.get(folder, (folder,))
        paths = [p for n in names for p in found.get(n, [])]
        paths += [os.path.join(comfy_dir, "models", n) for n in names]
        out[folder] = list(dict.fromkeys(paths))
    return out


# --------------------------------------------------------------------------------------------
# the hub


def _hub():
    hub = require("huggingface_hub", "Downloading model files", "huggingface_hub")
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    token = os.environ.get("HF_TOKEN") or None
    return hub, endpoint, token


class HubHTTPError(FantasyPortraitError):
    """An HTTP error from the hub while downloading, with its status and ``X-Error-Code``."""

    def __init__(self, status: int, code: str | None):
        super().__init__(f"HTTP {status}" + (f" ({code})" if code else ""))
        self.status, self.code = status, code


def describe_hub_error(exc: Exception, item: ModelFile, endpoint: str) -> str:
    """A hub failure, in words that say what to do. The client's exception types and the hub's own
    ``X-Error-Code`` (from a download) say the same things."""
    from huggingface_hub import errors

    where = f"{item.repo}/{item.path}"
    if isinstance(exc, HubHTTPError):
        kind = exc.code
    elif isinstance(exc, FantasyPortraitError):
        return str(exc)
    else:
        kinds = ((errors.GatedRepoError, "GatedRepo"), (errors.RepositoryNotFoundError, "RepoNotFound"),
                 (errors.RemoteEntryNotFoundError, "EntryNotFound"), (errors.EntryNotFoundError, "EntryNotFound"))
        kind = next((code for cls, code in kinds if isinstance(exc, cls)), None)
    if kind == "GatedRepo":
        return (f"{where} is gated: accept its terms on {endpoint}/{item.repo} with your account, then set HF_TOKEN to "
                "a token of that account (https://huggingface.co/settings/tokens).")
    if kind == "RepoNotFound":
        return (f"The repository {item.repo} does not exist on {endpoint} (or is private: set HF_TOKEN). The pack's "
                "list of files may be out of date: update the pack.")
    if kind == "EntryNotFound":
        return (f"{item.path} is no longer in {item.repo} on {endpoint}. The pack's list of files may be out of date: "
                "update the pack.")
    if isinstance(exc, (HubHTTPError, errors.HfHubHTTPError)):
        return f"{endpoint} answered {where} with an error: {str(exc).splitlines()[0]}"
    return (f"Cannot reach the Hugging Face hub at {endpoint} ({type(exc).__name__}: {exc}). Check the network, or "
            "point HF_ENDPOINT at a mirror.")


def look_up(files: list[ModelFile], offline_ok: bool = False) -> list[str]:
    """Fill in each file's size and SHA-256 from the hub. With ``offline_ok`` a file that cannot be
    looked up keeps ``size=None`` and the reason is returned; otherwise the first failure raises."""
    hub, endpoint, token = _hub()
    notes = []
    for item in files:
        try:
            meta = hub.get_hf_file_metadata(hub.hf_hub_url(item.repo, item.path, endpoint=endpoint), token=token,
                                            timeout=10)
            item.size, item.sha256 = meta.size, (meta.etag or "").strip('"') or None
        except Exception as exc:  # noqa: BLE001 - every hub failure becomes a message
            message = describe_hub_error(exc, item, endpoint)
            if not offline_ok:
                raise FantasyPortraitError(message) from None
            notes.append(message)
    return notes


def _is_sha256(text: str | None) -> bool:
    return bool(text) and len(text) == 64 and all(c in "0123456789abcdef" for c in text)


class Verified:
    """Files already checked against the hub (path -> size, mtime, sha256), so a second run does not
    hash GBs again; a file changed since (size or mtime) is hashed again."""

    def __init__(self, path: str):
        self.path = path
        try:
            with open(path, encoding="utf-8") as fh:
                self.data = json.load(fh)
        except (OSError, ValueError):
            self.data = {}

    def matches(self, path: str, sha256: str | None) -> bool:
        st = os.stat(path)
        rec = self.data.get(os.path.abspath(path))
        if rec and rec["size"] == st.st_size and rec["mtime"] == st.st_mtime and rec["sha256"] == sha256:
            return True
        if not _is_sha256(sha256):
            return True  # the hub gave no checksum (not an LFS file): the size check is all there is
        if file_sha256(path) != sha256:
            return False
        self.remember(path, sha256)
        return True

    def remember(self, path: str, sha256: str) -> None:
        st = os.stat(path)
        self.data[os.path.abspath(path)] = {"size": st.st_size, "mtime": st.st_mtime, "sha256": sha256}
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(self.data, fh)
        os.replace(tmp, self.path)


def free_bytes(path: str) -> int:
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return shutil.disk_usage(path).free


def _size(n: int | None) -> str:
    if n is None:
        return "size unknown"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024


# --------------------------------------------------------------------------------------------
# the command


@dataclass
class Step:
    item: ModelFile
    target: str          # final path
    present: str | None  # where it already is, complete
    partial: int = 0     # bytes already downloaded in the staging folder


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
    """Copy the pack into ComfyUI's custom_nodes/ (unless it already lives there)."""
    custom = os.path.join(comfy_dir, "custom_nodes")
    if os.path.dirname(PACK_DIR) == os.path.abspath(custom):
        say(f"pack: already in {custom}")
        return PACK_DIR
    target = os.path.join(custom, PACK_NAME)
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


def _fetch(url: str, headers: dict, part: str, size: int | None, progress: Callable[[int, int | None], None]) -> None:
    """Download ``url`` into ``part``, going on from the bytes an earlier attempt left there (HTTP
    ``Range``); a few dropped connections are resumed at once, then the error is raised with the
    partial file kept for the next run."""
    import http.client
    import urllib.error
    import urllib.request

    for attempt in range(4):
        have = os.path.getsize(part) if os.path.isfile(part) else 0
        if size is not None and have >= size:
            if have > size:
                os.truncate(part, 0)
                continue
            return
        request = urllib.request.Request(url, headers=dict(headers, **({"Range": f"bytes={have}-"} if have else {})))
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                if have and r.status != 206:  # the server ignored the range: start again
                    have = 0
                with open(part, "ab" if have else "wb") as fh:
                    for chunk in iter(lambda: r.read(1 << 20), b""):
                        fh.write(chunk)
                        have += len(chunk)
                        progress(have, size)
            if size is None or have >= size:
                return
        except urllib.error.HTTPError as exc:
            raise HubHTTPError(exc.code, exc.headers.get("X-Error-Code")) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError):
            if attempt == 3:
                raise
    raise FantasyPortraitError(f"the download of {url} kept breaking off")


def download(step: Step, verified: Verified, say: Callable[[str], None]) -> None:
    """One file: into the staging folder (resuming what an earlier run left), checked against the hub's
    SHA-256, then moved under its final name."""
    hub, endpoint, token = _hub()
    item = step.item
    staging = os.path.join(os.path.dirname(step.target), STAGING)
    os.makedirs(staging, exist_ok=True)
    part = os.path.join(staging, item.name + ".part")
    shown = {"at": -1}

    def progress(done, total):
        if total:
            tenth = done * 10 // total
            if tenth != shown["at"]:
                shown["at"] = tenth
                say(f"    {item.name}: {done * 100 // total}% of {_size(total)}")

    from huggingface_hub.utils import build_hf_headers

    headers = build_hf_headers(token=token)
    headers["Accept-Encoding"] = "identity"
    try:
        _fetch(hub.hf_hub_url(item.repo, item.path, endpoint=endpoint), headers, part, item.size, progress)
    except Exception as exc:  # noqa: BLE001
        kept = os.path.getsize(part) if os.path.isfile(part) else 0
        raise FantasyPortraitError(describe_hub_error(exc, item, endpoint) + (
            f" The {_size(kept)} downloaded so far are kept in {staging}; the next run resumes from there."
            if kept else "")) from None
    got = os.path.getsize(part)
    if item.size is not None and got != item.size:
        os.unlink(part)
        raise FantasyPortraitError(f"{item.name}: downloaded {got} bytes, the hub lists {item.size}; run setup again.")
    if _is_sha256(item.sha256):
        digest = file_sha256(part)
        if digest != item.sha256:
            os.unlink(part)
            raise FantasyPortraitError(f"{item.name}: the download's SHA-256 {digest[:16]}... is not the hub's "
                                       f"{item.sha256[:16]}...; it was removed: run setup again.")
    os.replace(part, step.target)
    if _is_sha256(item.sha256):
        verified.remember(step.target, item.sha256)


def run_setup(comfyui: str | None = None, python: str | None = None, variant: str = "fp8", resolution: str = "480p",
              dry_run: bool = False, say: Callable[[str], None] = print) -> int:
    comfy_dir = find_comfyui(comfyui)
    say(f"ComfyUI: {comfy_dir}")
    files = model_files(variant, resolution)
    dirs = model_dirs(comfy_dir)
    notes = look_up(files, offline_ok=dry_run)
    verified = Verified(os.path.join(comfy_dir, "models", STATE))
    steps = plan(files, dirs, None if dry_run else verified)
    python = comfyui_python(comfy_dir, python)
    todo = [s for s in steps if s.present is None]
    need = sum((s.item.size or 0) - s.partial for s in todo)
    for s in steps:
        state = "present" if s.present else ("resume" if s.partial else "download")
        extra = f", {_size(s.partial)} already downloaded" if s.partial and not s.present else ""
        say(f"  {state:8} {s.item.repo}/{s.item.path} -> {s.target} ({_size(s.item.size)}{extra})")
    free = free_bytes(os.path.dirname(todo[0].target)) if todo else None
    unknown = [s for s in todo if s.item.size is None]
    say(f"to download: {len(todo)} file(s), {_size(need)}" + (f" + {len(unknown)} of unknown size" if unknown else "")
        + (f"; free disk: {_size(free)}" if free is not None else ""))
    for note in notes:
        say(f"  (size not looked up: {note})")
    if not dry_run and free is not None and need > free:
        raise FantasyPortraitError(f"Not enough disk space: the downloads need {_size(need)} but "
                                   f"{os.path.dirname(todo[0].target)} has {_size(free)} free. Free some space (or "
                                   "point the model folders elsewhere in extra_model_paths.yaml) and run setup again.")
    pack = install_pack(comfy_dir, say, dry_run)
    install_requirements(python, PACK_DIR if dry_run else pack, say, dry_run)
    if dry_run:
        say("dry run: nothing was installed or downloaded")
        return 0
    done_bytes = 0
    for k, step in enumerate(todo, 1):
        say(f"[{k}/{len(todo)}] {step.item.name} ({_size(step.item.size)}; {_size(done_bytes)} of {_size(need)} done)")
        download(step, verified, say)
        done_bytes += (step.item.size or 0) - step.partial
    say("all model files are in place")
    unet = files[0].name
    workflow = os.path.join(pack, "workflows", "api", "fantasyportrait_single_api.json")
    shipped = load_workflow(workflow)  # the shipped graph's own model file and resolution
    extra = "" if unet in [n["inputs"].get("unet_name") for n in shipped.values()] else \
        f" --set UNETLoader.unet_name={unet}"
    if resolution not in [n["inputs"].get("resolution") for n in shipped.values()]:
        extra += f" --set FantasyPortraitOutputSize.resolution={resolution}"
    say("animate a portrait (the released examples are man.jpeg and jgz.mp4 in the FantasyPortrait repository's "
        "assert/ folder):")
    say(f"  fantasyportrait run --comfyui {comfy_dir} --workflow {workflow} --image portrait.jpg --video driving.mp4 "
        f"--out fantasyportrait.mp4{extra}")
    return 0
