"""Tools on top of the core: the ``fantasyportrait`` command line, the HTTP runner, batch runs, setup.

The HTTP-only commands (``run``, ``batch``, every ``--help``) import neither torch nor numpy nor OpenCV, so a
machine without them can drive a remote ComfyUI; ``extract``/``encode`` import the model core when they run."""

import hashlib
import os

#: the folder above this package: the pack's own folder (the one ComfyUI loads from custom_nodes/) in a checkout,
#: a registry zip or an editable install; site-packages after a normal ``pip install``
PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def is_pack(folder: str) -> bool:
    """Whether ``folder`` is the node pack itself (its ComfyUI entry point, nodes and workflows), not, say, a
    site-packages folder that holds only the installed command line."""
    entry = os.path.join(folder, "__init__.py")
    if not (os.path.isfile(entry) and os.path.isdir(os.path.join(folder, "nodes"))
            and os.path.isdir(os.path.join(folder, "workflows", "api"))):
        return False
    with open(entry, encoding="utf-8") as fh:
        return "comfy_entrypoint" in fh.read()


#: the shipped workflows by their short names (``run --workflow single``, a jobs file's ``workflow`` column)
SHIPPED = {"single": "fantasyportrait_single", "two_from_one_video": "fantasyportrait_two_from_one_video",
           "people_from_videos": "fantasyportrait_people_from_videos",
           "custom_sampling": "fantasyportrait_custom_sampling", "long": "fantasyportrait_long",
           "long_people_from_videos": "fantasyportrait_long_people_from_videos", "fast": "fantasyportrait_fast"}


def shipped_workflow(name: str) -> str:
    """The API file of a shipped workflow (``fantasyportrait_single`` or its short name ``single``, ...): the pack's
    ``workflows/api/``, or the copy installed with the package."""
    name = SHIPPED.get(name, name)
    own = os.path.join(PACK_DIR, "workflows", "api", f"{name}_api.json")
    if os.path.isfile(own):
        return own
    import importlib.resources

    return str(importlib.resources.files(__name__).joinpath("workflows", f"{name}_api.json"))


def file_sha256(path: str) -> str:
    """SHA-256 of a file, read in 8 MB pieces (model files are GBs)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(8 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
