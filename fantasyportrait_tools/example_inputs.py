"""The example inputs that ship with the pack (``examples/``, public-domain photos and driving clips made from
them): which shipped workflow animates which, where they are (the pack's folder, or the copy installed with the
package), and copying them into ComfyUI's input folder under the names the shipped graphs load, so a template
opened from the browser runs as it is."""

from __future__ import annotations

import os
import shutil
from typing import Callable

from . import PACK_DIR, SHIPPED

#: the names the copies get in ComfyUI's input folder (and the names the shipped graphs load)
PREFIX = "fantasyportrait_example_"

_ONE = ("portrait.jpg", ("driver.mp4",))
_TWO_FROM_ONE = ("two_people.jpg", ("two_people_driver.mp4",))
_TWO_FROM_TWO = ("two_people.jpg", ("driver.mp4", "driver_2.mp4"))
#: per shipped workflow: the portrait and the driving video(s), in the order of its LoadVideo nodes
BY_WORKFLOW = {
    "fantasyportrait_single": _ONE, "fantasyportrait_custom_sampling": _ONE, "fantasyportrait_long": _ONE,
    "fantasyportrait_fast": _ONE, "fantasyportrait_two_from_one_video": _TWO_FROM_ONE,
    "fantasyportrait_people_from_videos": _TWO_FROM_TWO, "fantasyportrait_long_people_from_videos": _TWO_FROM_TWO,
}
FILES = sorted({f for image, videos in BY_WORKFLOW.values() for f in (image, *videos)})


def examples_dir() -> str:
    """The folder that holds the example files: the pack's ``examples/``, or the copy installed with the package."""
    own = os.path.join(PACK_DIR, "examples")
    if os.path.isfile(os.path.join(own, FILES[0])):
        return own
    import importlib.resources

    return str(importlib.resources.files(__package__).joinpath("examples"))


def for_workflow(name: str) -> tuple[str, list[str]] | None:
    """The example portrait and driving videos (paths) of a shipped workflow (by file path, full or short name);
    None for any other workflow."""
    stem = os.path.basename(name)
    for suffix in (".json", "_api"):
        stem = stem[:-len(suffix)] if stem.endswith(suffix) else stem
    entry = BY_WORKFLOW.get(SHIPPED.get(stem, stem))
    if entry is None:
        return None
    folder = examples_dir()
    return os.path.join(folder, entry[0]), [os.path.join(folder, v) for v in entry[1]]


def upload_name(path: str) -> str | None:
    """The name an example file gets in ComfyUI's input folder (so an upload never overwrites a user's own
    ``portrait.jpg``); None for any other file."""
    name = os.path.basename(path)
    if name in FILES and os.path.isfile(path) and os.path.samefile(os.path.dirname(os.path.abspath(path)), examples_dir()):
        return PREFIX + name
    return None


def copy_to_input(input_dir: str, say: Callable[[str], None] = print) -> list[str]:
    """Copy the example files into ComfyUI's input folder as ``fantasyportrait_example_*``, leaving files already
    there alone; returns the names copied."""
    os.makedirs(input_dir, exist_ok=True)
    copied = []
    for name in FILES:
        target = os.path.join(input_dir, PREFIX + name)
        if not os.path.exists(target):
            shutil.copyfile(os.path.join(examples_dir(), name), target)
            copied.append(PREFIX + name)
    if copied:
        say(f"examples: copied {', '.join(copied)} into {input_dir} (the shipped templates load them)")
    return copied
