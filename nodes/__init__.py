"""ComfyUI nodes of the pack: thin glue from ComfyUI types to ``fantasyportrait_core`` calls.

One ``nodes_<feature>.py`` module per family (category ``FantasyPortrait/<family>``), each defining
``NODE_CLASS_MAPPINGS`` and ``NODE_DISPLAY_NAME_MAPPINGS``, merged here; ``wan_patch.py`` holds the
only code that reaches into ComfyUI's Wan model.
"""

from . import nodes_embeds, nodes_faces, nodes_loaders, nodes_motion, nodes_sampling, nodes_size

_FAMILIES = (nodes_loaders, nodes_faces, nodes_motion, nodes_embeds, nodes_size, nodes_sampling)
NODE_CLASS_MAPPINGS = {k: v for family in _FAMILIES for k, v in family.NODE_CLASS_MAPPINGS.items()}
NODE_DISPLAY_NAME_MAPPINGS = {k: v for family in _FAMILIES for k, v in family.NODE_DISPLAY_NAME_MAPPINGS.items()}
