"""Reading weight files safely, for every model of the pack.

``.safetensors`` files, and torch pickles read with ``torch.load(weights_only=True)``: a file that
would need code execution to unpickle is refused. A file that is not a model at all is named for what
it is (a Git LFS pointer, a web page, an incomplete download). Strict key checks raise a
:class:`CheckpointError` that names the file and lists the missing and unexpected keys.
"""

from __future__ import annotations

import os
import pickle
import zipfile

import torch

from .errors import CheckpointError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[str(dtype).lower()]
    except KeyError:
        raise CheckpointError(f"Unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}.") from None


# --------------------------------------------------------------------------------------------
# reading files


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a safetensors or torch-pickle file into a flat ``{key: tensor}`` dict.

    Pickles are loaded with ``weights_only=True``. A dict of state dicts (the released ``.ckpt``)
    is flattened with ``part.`` prefixes.
    """
    path = os.fspath(path)
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"Model file not found: {path}")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{name} is empty (0 bytes): the download is incomplete. Download it again.")
    _refuse_non_model_file(path)
    if path.lower().endswith(".safetensors"):
        state = _read_safetensors(path)
    else:
        state = _read_pickle(path)
    return _flatten(state, name)


def _refuse_non_model_file(path: str) -> None:
    """Name what a file is when it is clearly not a model: a Git LFS pointer, a web page, or bytes
    that no torch or safetensors file starts with (an incomplete or failed download)."""
    name = os.path.basename(path)
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        head = fh.read(512)
    again = "Download it again (from the model's repository, with its download link or huggingface-cli)."
    if head.startswith(b"version https://git-lfs"):
        raise CheckpointError(f"{name} is a Git LFS pointer ({size} bytes), not the model file: the download fetched "
                              f"the pointer instead of the file. {again}")
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"{\"error")):
        raise CheckpointError(f"{name} is a web page or an error message ({size} bytes), not a model file: the "
                              f"download saved a login or error page. {again}")
    if path.lower().endswith(".safetensors"):
        header = int.from_bytes(head[:8], "little") if len(head) >= 8 else -1
        if not 0 < header <= size - 8 or head[8:9] != b"{":
            raise CheckpointError(f"{name} is not a safetensors file ({size} bytes; it does not start with a "
                                  f"safetensors header): it is incomplete or not a model file. {again}")
    elif not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise CheckpointError(f"{name} is not a model file ({size} bytes; it starts with {head[:12]!r}, which no "
                              f"torch checkpoint does): it is incomplete or another kind of file. {again}")


def _read_safetensors(path: str) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{os.path.basename(path)} is not a readable safetensors file ({exc}). It may be truncated "
            "(an interrupted download) or another kind of file renamed; download it again."
        ) from exc


def _well_formed_pickle(path: str) -> bool:
    """Whether a (non-zip) file parses as one pickle stream, without executing anything."""
    import pickletools

    if zipfile.is_zipfile(path):
        return True
    try:
        with open(path, "rb") as fh:
            for _ in pickletools.genops(fh):
                pass
    except Exception:  # noqa: BLE001 - any parse failure means damaged data
        return False
    return True


def _read_pickle(path: str) -> dict:
    name = os.path.basename(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        detail = next((line.strip() for line in str(exc).splitlines() if "GLOBAL" in line or "global" in line), "")
        if not detail and not _well_formed_pickle(path):  # damaged data, not an unsafe pickle
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CheckpointError(
                f"{name} could not be read as a torch checkpoint (damaged pickle data: {first}). It is incomplete "
                "(an interrupted download) or not a model file; download it again.") from exc
        raise CheckpointError(
            f"{name} refuses to load safely: it is a pickle that needs to execute code to be read (or uses pickle "
            "features that safe loading does not allow), and this pack never executes code from model files. Use "
            "the released file." + (f" ({detail})" if detail else "")
        ) from exc
    except Exception as exc:  # truncated zip, garbage bytes, ... : torch raises many types here
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"{name} could not be read as a torch checkpoint ({type(exc).__name__}: {first}). "
            "It may be truncated (an interrupted download) or not a model file; download it again."
        ) from exc


def _flatten(state, name: str) -> dict[str, torch.Tensor]:
    if not isinstance(state, dict):
        raise CheckpointError(f"{name} does not hold a state dict (found {type(state).__name__}).")
    flat: dict[str, torch.Tensor] = {}

    def walk(prefix, obj):
        for key, value in obj.items():
            full = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(full + ".", value)
            elif isinstance(value, torch.Tensor):
                flat[full] = value
            else:
                raise CheckpointError(f"{name}: entry {full!r} is a {type(value).__name__}, not a tensor.")

    walk("", state)
    return flat


def describe_foreign(keys: list[str]) -> str:
    sample = ", ".join(keys[:5])
    if any(k.startswith(("to_mouth.", "to_emo.", "m0.b1_4")) for k in keys):
        return "It looks like the PD-FGC motion encoder (pd_fpg.pth): load it with the face-model loader instead."
    if any(".self_attn.q.weight" in k or k.startswith("model.diffusion_model.") for k in keys):
        return "It looks like a Wan diffusion model: load that with ComfyUI's Load Diffusion Model node."
    if any(k.startswith(("first_stage_model.", "encoder.conv1", "decoder.")) for k in keys):
        return "It looks like a VAE."
    return f"Its first keys are: {sample}."


def key_error(name: str, missing: list[str], unexpected: list[str], what: str) -> CheckpointError:
    def listing(keys):
        shown = ", ".join(keys[:12])
        return shown + (f", ... ({len(keys)} in all)" if len(keys) > 12 else "")

    parts = [f"{name} does not match the {what} layout."]
    if missing:
        parts.append(f"Missing keys: {listing(missing)}.")
    if unexpected:
        parts.append(f"Unexpected keys: {listing(unexpected)}.")
    parts.append("Is this the right file, and is it complete?")
    return CheckpointError(" ".join(parts))


def sub_state(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def load_strict(module: torch.nn.Module, sub: dict, prefix: str, name: str, dtype: torch.dtype, what: str):
    """Load ``sub`` into ``module``: every key present, nothing more, the same shapes; floating-point
    tensors in ``dtype`` (integer buffers such as BatchNorm's counters as they are)."""
    expected = module.state_dict()
    missing = sorted(prefix + k for k in expected if k not in sub)
    unexpected = sorted(prefix + k for k in sub if k not in expected)
    if missing or unexpected:
        raise key_error(name, missing, unexpected, what)
    bad = [f"{prefix}{k}: {tuple(sub[k].shape)} (expected {tuple(v.shape)})"
           for k, v in expected.items() if sub[k].shape != v.shape]
    if bad:
        raise CheckpointError(f"{name}: tensors of the wrong shape: {'; '.join(bad[:8])}.")
    module.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v for k, v in sub.items()}, strict=True,
                           assign=True)
