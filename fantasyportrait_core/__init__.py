"""FantasyPortrait core: model and pipeline logic, importable and testable without ComfyUI."""

from .tokens.adapter import ExpressionEncoder, GroupScales
from .branch.attention import adapter_cross_attention, project_window_kv
from .tokens.checkpoint import AdapterBlocks, FantasyPortraitAdapter, adapter_from_state_dict, load_adapter
from .errors import CheckpointError, FantasyPortraitError, MissingDependencyError
from .tokens.windows import build_windows, check_frame_count, latent_frame_count

__all__ = [
    "AdapterBlocks",
    "CheckpointError",
    "ExpressionEncoder",
    "FantasyPortraitAdapter",
    "FantasyPortraitError",
    "GroupScales",
    "MissingDependencyError",
    "adapter_cross_attention",
    "adapter_from_state_dict",
    "build_windows",
    "check_frame_count",
    "latent_frame_count",
    "load_adapter",
    "project_window_kv",
]
