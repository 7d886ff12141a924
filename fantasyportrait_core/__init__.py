"""FantasyPortrait core: model and pipeline logic, importable and testable without ComfyUI.

The names below are loaded on first use, so importing a light module of the core (``errors``, ``sizing``)
does not import torch: the HTTP-only tools use those without it."""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ExpressionEncoder": "tokens.adapter", "GroupScales": "tokens.adapter",
    "adapter_cross_attention": "branch.attention", "project_window_kv": "branch.attention",
    "AdapterBlocks": "tokens.checkpoint", "FantasyPortraitAdapter": "tokens.checkpoint",
    "adapter_from_state_dict": "tokens.checkpoint", "load_adapter": "tokens.checkpoint",
    "CheckpointError": "errors", "FantasyPortraitError": "errors", "MissingDependencyError": "errors",
    "build_windows": "tokens.windows", "check_frame_count": "tokens.windows", "latent_frame_count": "tokens.windows",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
