"""ComfyUI entry point of the FantasyPortrait pack.

ComfyUI imports this file as a package and reads ``NODE_CLASS_MAPPINGS``. Importing it without
ComfyUI (tests, the command line) must not fail: the node modules are only loaded when ComfyUI's
own modules can be imported, and a failure there is reported instead of raised so that a broken
optional dependency never takes ComfyUI down.
"""

import logging

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
WEB_DIRECTORY = None

try:
    import comfy  # noqa: F401  (only present inside ComfyUI)
except ImportError:  # running outside ComfyUI
    comfy = None

if comfy is not None and __package__:
    try:
        from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: F811
    except Exception:  # never take ComfyUI down
        logging.getLogger(__name__).exception(
            "FantasyPortrait: the nodes could not be loaded; see the error above."
        )

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
