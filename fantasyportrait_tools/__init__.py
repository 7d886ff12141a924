"""Tools on top of the core: the ``fantasyportrait`` command line, the HTTP runner, batch runs, setup.

The HTTP-only commands (``run``, ``batch``, every ``--help``) import neither torch nor numpy nor OpenCV, so a
machine without them can drive a remote ComfyUI; ``extract``/``encode`` import the model core when they run."""

import hashlib
import os

#: the pack's folder (the one ComfyUI loads from custom_nodes/)
PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def file_sha256(path: str) -> str:
    """SHA-256 of a file, read in 8 MB pieces (model files are GBs)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(8 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
