"""Model files from Hugging Face for ``fantasyportrait setup``: sizes and SHA-256 from the hub before anything
starts, resumable downloads into a staging folder checked against the hub's SHA-256, and the record of checked
files (so a second run does not hash GBs again). ``HF_ENDPOINT`` and ``HF_TOKEN`` are honoured."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from typing import Callable

from fantasyportrait_core.errors import FantasyPortraitError, require

from . import file_sha256


STAGING = ".fantasyportrait-download"  # beside each target folder: partial downloads, resumed from there
STATE = ".fantasyportrait-verified.json"  # in models/: files already checked, by size and time


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


@dataclass
class Step:
    item: ModelFile
    target: str          # final path
    present: str | None  # where it already is, complete
    partial: int = 0     # bytes already downloaded in the staging folder


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


def size_text(n: int | None) -> str:
    if n is None:
        return "size unknown"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024


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
                say(f"    {item.name}: {done * 100 // total}% of {size_text(total)}")

    from huggingface_hub.utils import build_hf_headers

    headers = build_hf_headers(token=token)
    headers["Accept-Encoding"] = "identity"
    try:
        _fetch(hub.hf_hub_url(item.repo, item.path, endpoint=endpoint), headers, part, item.size, progress)
    except Exception as exc:  # noqa: BLE001
        kept = os.path.getsize(part) if os.path.isfile(part) else 0
        raise FantasyPortraitError(describe_hub_error(exc, item, endpoint) + (
            f" The {size_text(kept)} downloaded so far are kept in {staging}; the next run resumes from there."
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
