"""Loading the released FantasyPortrait adapter files.

Two layouts are accepted:

* ``fantasyportrait_model.ckpt``: a torch pickle holding a dict of four state dicts,
  ``proj_model``, ``mouth_proj_model``, ``emo_proj_model`` and ``ip_adapter``. It is read with
  ``torch.load(weights_only=True)``: a file that needs code execution to unpickle is refused.
* the single-file safetensors (``Wan2_1_FantasyPortrait_fp16.safetensors``): flat keys with those
  four prefixes, optionally plus the PD-FGC motion encoder under ``pd_fpg.``.

Dimensions are inferred from tensor shapes; every key is checked (nothing missing, nothing
unexpected) and a mismatch raises :class:`CheckpointError` naming the file and listing the keys.
The per-block K/V weights are returned apart from the token encoder (:class:`AdapterBlocks`),
keyed by Wan block index, for the Wan integration to place.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field

import torch

from .adapter import PROJ_PARTS, ExpressionEncoder, MultiProjection, Resampler
from .errors import CheckpointError

ENCODER_PARTS = ("proj_model", "mouth_proj_model", "emo_proj_model")
ADAPTER_PARTS = ENCODER_PARTS + ("ip_adapter",)
MOTION_ENCODER_PREFIX = "pd_fpg."
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.cross_attn\.ip_adapter_single_stream_([kv])_proj\.weight$")
RESAMPLER_DIM_HEAD = 64  # released: 20 heads x 64

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


# --------------------------------------------------------------------------------------------
# the adapter


@dataclass
class AdapterBlocks:
    """Per-Wan-block adapter projections: ``{block_index: (k_weight, v_weight)}``, each ``[D, C]``."""

    weights: dict[int, tuple[torch.Tensor, torch.Tensor]]

    def __len__(self) -> int:
        return len(self.weights)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.weights[index]

    @property
    def model_dim(self) -> int:
        return next(iter(self.weights.values()))[0].shape[0]

    @property
    def token_dim(self) -> int:
        return next(iter(self.weights.values()))[0].shape[1]

    def to(self, *args, **kwargs) -> "AdapterBlocks":
        return AdapterBlocks({i: (k.to(*args, **kwargs), v.to(*args, **kwargs)) for i, (k, v) in self.weights.items()})


@dataclass
class FantasyPortraitAdapter:
    """A loaded adapter: the token encoder, the per-block K/V weights and, if the file had it,
    the PD-FGC motion encoder's state dict (``pd_fpg.`` prefix removed)."""

    encoder: ExpressionEncoder
    blocks: AdapterBlocks
    source: str
    motion_encoder_state: dict[str, torch.Tensor] | None = field(default=None, repr=False)


def _describe_foreign(keys: list[str]) -> str:
    sample = ", ".join(keys[:5])
    if any(k.startswith(("to_mouth.", "to_emo.", "m0.b1_4")) for k in keys):
        return "It looks like the PD-FGC motion encoder (pd_fpg.pth): load it with the face-model loader instead."
    if any(".self_attn.q.weight" in k or k.startswith("model.diffusion_model.") for k in keys):
        return "It looks like a Wan diffusion model: load that with ComfyUI's Load Diffusion Model node."
    if any(k.startswith(("first_stage_model.", "encoder.conv1", "decoder.")) for k in keys):
        return "It looks like a VAE."
    return f"Its first keys are: {sample}."


def _key_error(name: str, missing: list[str], unexpected: list[str], what: str) -> CheckpointError:
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


def _sub(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _infer_resampler(sub: dict, part: str, name: str) -> Resampler:
    try:
        _, num_queries, dim = sub["latents"].shape
        in_dim = sub["proj_in.weight"].shape[1]
        out_dim = sub["proj_out.weight"].shape[0]
        inner = sub["layers.0.0.to_q.weight"].shape[0]
        ff_hidden = sub["layers.0.1.1.weight"].shape[0]
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{name}: {part} is not a Perceiver resampler (could not read {exc}).") from None
    depth = len({int(k.split(".")[1]) for k in sub if k.startswith("layers.") and k.split(".")[1].isdigit()})
    dim_head = RESAMPLER_DIM_HEAD if inner % RESAMPLER_DIM_HEAD == 0 else inner
    with torch.device("meta"):
        return Resampler(dim=dim, depth=depth, heads=inner // dim_head, dim_head=dim_head,
                         num_queries=num_queries, in_dim=in_dim, out_dim=out_dim, ff_hidden=ff_hidden)


def _infer_projection(sub: dict, name: str) -> MultiProjection:
    try:
        shapes = {p: sub[f"{p}_proj.weight"].shape for p in PROJ_PARTS}
    except KeyError as exc:
        raise CheckpointError(f"{name}: proj_model lacks {exc.args[0]!r}.") from None
    out_dims = {s[0] for s in shapes.values()}
    if len(out_dims) != 1:
        raise CheckpointError(f"{name}: proj_model's projections disagree on the token width: {shapes}.")
    with torch.device("meta"):
        return MultiProjection({p: s[1] for p, s in shapes.items()}, out_dims.pop())


def _load_strict(module: torch.nn.Module, sub: dict, prefix: str, name: str, dtype: torch.dtype):
    expected = module.state_dict()
    missing = sorted(prefix + k for k in expected if k not in sub)
    unexpected = sorted(prefix + k for k in sub if k not in expected)
    if missing or unexpected:
        raise _key_error(name, missing, unexpected, "FantasyPortrait adapter")
    bad = [f"{prefix}{k}: {tuple(sub[k].shape)} (expected {tuple(v.shape)})"
           for k, v in expected.items() if sub[k].shape != v.shape]
    if bad:
        raise CheckpointError(f"{name}: tensors of inconsistent shape: {'; '.join(bad[:8])}.")
    module.load_state_dict({k: v.to(dtype) for k, v in sub.items()}, strict=True, assign=True)


def _blocks(sub: dict, name: str, dtype: torch.dtype) -> AdapterBlocks:
    found: dict[int, dict[str, torch.Tensor]] = {}
    unexpected = []
    for key, value in sub.items():
        m = _BLOCK_KEY.match(key)
        if m is None:
            unexpected.append("ip_adapter." + key)
            continue
        found.setdefault(int(m.group(1)), {})[m.group(2)] = value
    if not found:
        raise _key_error(name, ["ip_adapter.blocks.0.cross_attn.ip_adapter_single_stream_k_proj.weight"],
                         sorted(unexpected), "FantasyPortrait adapter")
    count = max(found) + 1
    missing = [f"ip_adapter.blocks.{i}.cross_attn.ip_adapter_single_stream_{kv}_proj.weight"
               for i in range(count) for kv in "kv" if kv not in found.get(i, {})]
    if missing or unexpected:
        raise _key_error(name, missing, sorted(unexpected), "FantasyPortrait adapter")
    shapes = {tuple(w.shape) for pair in found.values() for w in pair.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise CheckpointError(f"{name}: the per-block K/V weights have differing shapes {sorted(shapes)}.")
    return AdapterBlocks({i: (found[i]["k"].to(dtype), found[i]["v"].to(dtype)) for i in range(count)})


def adapter_from_state_dict(state: dict[str, torch.Tensor], name: str = "checkpoint",
                            dtype=torch.float32) -> FantasyPortraitAdapter:
    """Build the adapter from a flat state dict in either released layout (see module docs).

    ``dtype`` is the precision of the per-block K/V projections; the expression encoder is fp32."""
    dtype = resolve_dtype(dtype)
    keys = sorted(state)
    if not any(k.startswith(p + ".") for k in keys for p in ADAPTER_PARTS):
        raise CheckpointError(f"{name} is not a FantasyPortrait adapter. {_describe_foreign(keys)}")
    stray = [k for k in keys if not k.startswith(tuple(p + "." for p in ADAPTER_PARTS)) and
             not k.startswith(MOTION_ENCODER_PREFIX)]
    if stray:
        raise _key_error(name, [], stray, "FantasyPortrait adapter")

    subs = {p: _sub(state, p + ".") for p in ADAPTER_PARTS}
    absent = [p for p in ADAPTER_PARTS if not subs[p]]
    if absent:
        raise CheckpointError(f"{name} lacks the adapter part(s) {', '.join(absent)}: it is incomplete or another model.")

    proj = _infer_projection(subs["proj_model"], name)
    mouth = _infer_resampler(subs["mouth_proj_model"], "mouth_proj_model", name)
    emo = _infer_resampler(subs["emo_proj_model"], "emo_proj_model", name)
    for part, module in zip(ENCODER_PARTS, (proj, mouth, emo)):
        # the released code builds the token encoder in fp32 and runs it outside autocast: always fp32 here
        _load_strict(module, subs[part], part + ".", name, torch.float32)
    try:
        encoder = ExpressionEncoder(proj, mouth, emo).eval()
    except ValueError as exc:
        raise CheckpointError(f"{name}: {exc}") from None
    blocks = _blocks(subs["ip_adapter"], name, dtype)
    if blocks.token_dim != encoder.token_dim:
        raise CheckpointError(
            f"{name}: the per-block K/V weights take {blocks.token_dim}-wide tokens but the encoder makes "
            f"{encoder.token_dim}-wide ones.")
    motion = _sub(state, MOTION_ENCODER_PREFIX) or None
    return FantasyPortraitAdapter(encoder=encoder, blocks=blocks, source=name, motion_encoder_state=motion)


def load_adapter(path: str | os.PathLike, dtype="fp32") -> FantasyPortraitAdapter:
    """Load ``fantasyportrait_model.ckpt`` or the single-file safetensors."""
    state = read_state_dict(path)
    return adapter_from_state_dict(state, name=os.path.basename(os.fspath(path)), dtype=dtype)
