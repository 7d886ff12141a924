"""Error types raised by the core.

Every error a user can cause (bad file, bad input shape, missing optional dependency) is a
:class:`FantasyPortraitError` with a message that says what was wrong and what to do. The
ComfyUI nodes and the command line show these messages as they are.
"""


class FantasyPortraitError(ValueError):
    """A problem with the user's input or files, explained in the message."""


class CheckpointError(FantasyPortraitError):
    """A model file that cannot be used: wrong model, truncated, unsafe or mismatched keys."""


class MissingDependencyError(FantasyPortraitError, ImportError):
    """An optional dependency needed by the feature in use is not installed."""


def require(module_name: str, feature: str, pip_name: str | None = None):
    """Import an optional dependency, or raise an error that says how to install it."""
    import importlib

    try:
        return importlib.import_module(module_name)
    except ImportError as exc:  # pragma: no cover - message content tested via callers
        raise MissingDependencyError(
            f"{feature} needs the optional package '{pip_name or module_name}', which is not "
            f"installed ({exc}). Install it into ComfyUI's Python with: "
            f"python -m pip install {pip_name or module_name}"
        ) from exc


def require_finite(**values) -> None:
    """Refuse NaN or infinite numeric inputs (ComfyUI's min/max checks let NaN through)."""
    import math

    for name, value in values.items():
        if value is not None and not math.isfinite(float(value)):
            raise FantasyPortraitError(f"{name} is {value}; give a finite number.")
