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
import re
from dataclasses import dataclass, field

import torch

from ..errors import CheckpointError
from ..motion.encoder import MOTION_ENCODER_PREFIX
from ..weights import describe_foreign, key_error, load_strict, read_state_dict, resolve_dtype, sub_state
from .adapter import PROJ_PARTS, ExpressionEncoder, MultiProjection, Resampler

ENCODER_PARTS = ("proj_model", "mouth_proj_model", "emo_proj_model")
ADAPTER_PARTS = ENCODER_PARTS + ("ip_adapter",)
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.cross_attn\.ip_adapter_single_stream_([kv])_proj\.weight$")
RESAMPLER_DIM_HEAD = 64  # released: 20 heads x 64


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


@dataclass
class FantasyPortraitAdapter:
    """A loaded adapter: the token encoder, the per-block K/V weights and, if the file had it,
    the PD-FGC motion encoder's state dict (``pd_fpg.`` prefix removed)."""

    encoder: ExpressionEncoder
    blocks: AdapterBlocks
    source: str
    motion_encoder_state: dict[str, torch.Tensor] | None = field(default=None, repr=False)


def _infer_resampler(sub: dict, part: str, name: str, operations=torch.nn) -> Resampler:
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
                         num_queries=num_queries, in_dim=in_dim, out_dim=out_dim, ff_hidden=ff_hidden,
                         operations=operations)


def _infer_projection(sub: dict, name: str, operations=torch.nn) -> MultiProjection:
    try:
        shapes = {p: sub[f"{p}_proj.weight"].shape for p in PROJ_PARTS}
    except KeyError as exc:
        raise CheckpointError(f"{name}: proj_model lacks {exc.args[0]!r}.") from None
    out_dims = {s[0] for s in shapes.values()}
    if len(out_dims) != 1:
        raise CheckpointError(f"{name}: proj_model's projections disagree on the token width: {shapes}.")
    with torch.device("meta"):
        return MultiProjection({p: s[1] for p, s in shapes.items()}, out_dims.pop(), operations)


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
        raise key_error(name, ["ip_adapter.blocks.0.cross_attn.ip_adapter_single_stream_k_proj.weight"],
                         sorted(unexpected), "FantasyPortrait adapter")
    count = max(found) + 1
    missing = [f"ip_adapter.blocks.{i}.cross_attn.ip_adapter_single_stream_{kv}_proj.weight"
               for i in range(count) for kv in "kv" if kv not in found.get(i, {})]
    if missing or unexpected:
        raise key_error(name, missing, sorted(unexpected), "FantasyPortrait adapter")
    shapes = {tuple(w.shape) for pair in found.values() for w in pair.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise CheckpointError(f"{name}: the per-block K/V weights have differing shapes {sorted(shapes)}.")
    return AdapterBlocks({i: (found[i]["k"].to(dtype), found[i]["v"].to(dtype)) for i in range(count)})


def adapter_from_state_dict(state: dict[str, torch.Tensor], name: str = "checkpoint",
                            dtype=torch.float32, operations=torch.nn) -> FantasyPortraitAdapter:
    """Build the adapter from a flat state dict in either released layout (see module docs).

    ``dtype`` is the precision of the per-block K/V projections; the expression encoder is fp32, its layers
    from ``operations`` (default ``torch.nn``; ComfyUI's ``comfy.ops`` inside ComfyUI)."""
    dtype = resolve_dtype(dtype)
    keys = sorted(state)
    if not any(k.startswith(p + ".") for k in keys for p in ADAPTER_PARTS):
        raise CheckpointError(f"{name} is not a FantasyPortrait adapter. {describe_foreign(keys)}")
    stray = [k for k in keys if not k.startswith(tuple(p + "." for p in ADAPTER_PARTS)) and
             not k.startswith(MOTION_ENCODER_PREFIX)]
    if stray:
        raise key_error(name, [], stray, "FantasyPortrait adapter")

    subs = {p: sub_state(state, p + ".") for p in ADAPTER_PARTS}
    absent = [p for p in ADAPTER_PARTS if not subs[p]]
    if absent:
        raise CheckpointError(f"{name} lacks the adapter part(s) {', '.join(absent)}: it is incomplete or another model.")

    proj = _infer_projection(subs["proj_model"], name, operations)
    mouth = _infer_resampler(subs["mouth_proj_model"], "mouth_proj_model", name, operations)
    emo = _infer_resampler(subs["emo_proj_model"], "emo_proj_model", name, operations)
    for part, module in zip(ENCODER_PARTS, (proj, mouth, emo)):
        # the released code builds the token encoder in fp32 and runs it outside autocast: always fp32 here
        load_strict(module, subs[part], part + ".", name, torch.float32, "FantasyPortrait adapter")
    try:
        encoder = ExpressionEncoder(proj, mouth, emo).eval()
    except ValueError as exc:
        raise CheckpointError(f"{name}: {exc}") from None
    blocks = _blocks(subs["ip_adapter"], name, dtype)
    if blocks.token_dim != encoder.token_dim:
        raise CheckpointError(
            f"{name}: the per-block K/V weights take {blocks.token_dim}-wide tokens but the encoder makes "
            f"{encoder.token_dim}-wide ones.")
    motion = sub_state(state, MOTION_ENCODER_PREFIX) or None
    return FantasyPortraitAdapter(encoder=encoder, blocks=blocks, source=name, motion_encoder_state=motion)


def load_adapter(path: str | os.PathLike, dtype="fp32", operations=torch.nn) -> FantasyPortraitAdapter:
    """Load ``fantasyportrait_model.ckpt`` or the single-file safetensors."""
    state = read_state_dict(path)
    return adapter_from_state_dict(state, name=os.path.basename(os.fspath(path)), dtype=dtype, operations=operations)
