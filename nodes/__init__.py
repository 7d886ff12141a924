"""ComfyUI nodes of the pack: thin glue from ComfyUI types to ``fantasyportrait_core`` calls.

V3 nodes (``comfy_api.latest.io.ComfyNode``), one ``nodes_<family>.py`` module per family (category
``FantasyPortrait/<family>``), each listing its classes in ``NODES``; ``comfy_entrypoint`` hands them all
to ComfyUI. ``wan_patch.py`` holds the only code that reaches into ComfyUI's Wan model, ``guidance.py`` the
portrait guider, ``managed.py`` the pack's small models under ComfyUI's model management; ``common.py`` the
pack's socket types and helpers. Per-node documentation: ``web/docs/<node id>.md``.
"""

from comfy_api.latest import ComfyExtension, io

from . import (nodes_check, nodes_embeds, nodes_faces, nodes_loaders, nodes_long, nodes_motion, nodes_sampling,
               nodes_size)

NODES: list[type[io.ComfyNode]] = [node for family in (nodes_loaders, nodes_faces, nodes_motion, nodes_embeds,
                                                       nodes_size, nodes_sampling, nodes_long, nodes_check)
                                   for node in family.NODES]


class FantasyPortraitExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> FantasyPortraitExtension:
    return FantasyPortraitExtension()
