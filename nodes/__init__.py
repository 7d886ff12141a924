"""ComfyUI nodes of the pack: thin glue from ComfyUI types to ``fantasyportrait_core`` calls.

Each ``nodes_<feature>.py`` module defines ``NODE_CLASS_MAPPINGS`` and
``NODE_DISPLAY_NAME_MAPPINGS``; they are merged here.
"""

from . import nodes_fantasyportrait, nodes_motion, nodes_size

_FAMILIES = (nodes_fantasyportrait, nodes_motion, nodes_size)
NODE_CLASS_MAPPINGS = {k: v for family in _FAMILIES for k, v in family.NODE_CLASS_MAPPINGS.items()}
NODE_DISPLAY_NAME_MAPPINGS = {k: v for family in _FAMILIES for k, v in family.NODE_DISPLAY_NAME_MAPPINGS.items()}
