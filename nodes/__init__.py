"""ComfyUI nodes of the pack: thin glue from ComfyUI types to ``fantasyportrait_core`` calls.

Each ``nodes_<feature>.py`` module defines ``NODE_CLASS_MAPPINGS`` and
``NODE_DISPLAY_NAME_MAPPINGS``; they are merged here.
"""

from . import nodes_fantasyportrait, nodes_motion

NODE_CLASS_MAPPINGS = {**nodes_fantasyportrait.NODE_CLASS_MAPPINGS, **nodes_motion.NODE_CLASS_MAPPINGS}
NODE_DISPLAY_NAME_MAPPINGS = {**nodes_fantasyportrait.NODE_DISPLAY_NAME_MAPPINGS,
                              **nodes_motion.NODE_DISPLAY_NAME_MAPPINGS}
