"""ComfyUI entry point of the FantasyPortrait pack.

ComfyUI imports this file as a package and calls its V3 ``comfy_entrypoint`` (the pack defines no
``NODE_CLASS_MAPPINGS``: ComfyUI would read that instead). Importing it without ComfyUI (tests, the
command line) must not fail: the node modules are only loaded when ComfyUI's own modules can be
imported, and a failure there, or a ComfyUI too old for the pack, is logged instead of raised (then
there is no ``comfy_entrypoint`` and ComfyUI lists the pack as failed) so that a broken optional
dependency never takes ComfyUI down. ``WEB_DIRECTORY`` holds the per-node docs (``web/docs``).
"""

from __future__ import annotations

import logging

WEB_DIRECTORY = "./web"

try:
    import comfy  # noqa: F401  (only present inside ComfyUI)
except ImportError:  # running outside ComfyUI
    comfy = None

MIN_COMFYUI = (0, 3, 64)  # also declared as requires-comfyui in pyproject.toml
RUN_ON = ("0.3.64", "0.3.75")  # the releases the tests run on (.ci/run; README, "ComfyUI versions")
READ_UP_TO = "0.38.1"  # the newest release whose sources the host contracts were checked against


def _version(version) -> tuple | None:
    try:
        return tuple(int(part) for part in str(version).split("-")[0].split(".")[:3])
    except ValueError:
        return None  # a development build without a plain version


def comfyui_too_old(version: str | None) -> str | None:
    """A message when the running ComfyUI is older than the pack supports, else None (a newer one, even newer
    than any release the pack was run on, is never refused)."""
    found = _version(version)
    if found is None:
        return None  # let it try
    if found < MIN_COMFYUI:
        need = ".".join(map(str, MIN_COMFYUI))
        return (f"FantasyPortrait needs ComfyUI {need} or newer, this is {version}: update ComfyUI "
                "(git pull, or the manager's 'Update ComfyUI'); the FantasyPortrait nodes are not loaded.")
    return None


def comfyui_tested_note(version: str | None) -> str:
    """What the log says about the running ComfyUI: whether the pack was run on it, or only read against it."""
    found = _version(version)
    runs = ", ".join(RUN_ON)
    if found is None:
        return (f"FantasyPortrait: this ComfyUI does not say its release ({version!r}); the pack is tested on {runs} "
                f"and its host contracts were checked in the sources up to {READ_UP_TO}.")
    if found in [_version(v) for v in RUN_ON]:
        return f"FantasyPortrait: ComfyUI {version}, a release the pack is tested on ({runs})."
    if found is not None and found < _version(RUN_ON[-1]):
        return (f"FantasyPortrait: ComfyUI {version}; the pack is tested on {runs} (releases between them share the "
                "contracts it uses).")
    return (f"FantasyPortrait: ComfyUI {version} is newer than the releases the pack is tested on ({runs}); the host "
            f"contracts it uses were checked in the sources up to {READ_UP_TO} (README, 'ComfyUI versions'). Please "
            "report anything that fails.")


if comfy is not None and __package__:
    try:
        import comfyui_version

        running = getattr(comfyui_version, "__version__", None)
    except ImportError:  # versions before comfyui_version.py existed
        running = "0.0.0"
    too_old = comfyui_too_old(running)
    if too_old:
        logging.getLogger(__name__).error(too_old)
    else:
        logging.getLogger(__name__).info(comfyui_tested_note(running))
        try:
            from .nodes import comfy_entrypoint  # noqa: F401
        except Exception:  # never take ComfyUI down
            logging.getLogger(__name__).exception(
                "FantasyPortrait: the nodes could not be loaded; see the error above."
            )

