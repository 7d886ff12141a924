"""Tools on top of the core: the ``fantasyportrait`` command line, the HTTP runner, batch runs, setup."""

import os

#: the pack's folder (the one ComfyUI loads from custom_nodes/)
PACK_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
