"""API-format workflows for the runner: loading one, its nodes by class, putting the uploaded inputs into its
LoadImage/LoadVideo nodes, ``--set`` overrides, and the check against a server's ``/object_info`` (node types,
model files named with their folder) before anything is queued."""

from __future__ import annotations

import json

from fantasyportrait_core.errors import FantasyPortraitError

from .errors import RunError


def node_order(node_id: str) -> tuple:
    """Sort key of API-format node ids: numerically ("2" before "10")."""
    return len(node_id), node_id


def nodes_of_class(workflow: dict, *classes: str) -> list[str]:
    """Ids of the workflow's nodes of these class types, in node-id order."""
    return sorted((k for k, n in workflow.items() if n.get("class_type") in classes), key=node_order)


def fill_inputs(workflow: dict, image: str | None, videos: list[str]) -> dict:
    """Put uploaded file names into the workflow's LoadImage and LoadVideo nodes (in node-id order)."""
    wf = json.loads(json.dumps(workflow))

    if image is not None:
        loaders = nodes_of_class(wf, "LoadImage")
        if not loaders:
            raise FantasyPortraitError("The workflow has no LoadImage node for the portrait image.")
        wf[loaders[0]]["inputs"]["image"] = image
    loaders = nodes_of_class(wf, "LoadVideo")
    if len(videos) > len(loaders):
        raise FantasyPortraitError(
            f"{len(videos)} driving videos were given but the workflow has {len(loaders)} LoadVideo node(s).")
    for node_id, name in zip(loaders, videos):
        wf[node_id]["inputs"]["file"] = name
    return wf


def apply_overrides(workflow: dict, sets: list[str], notes: list[str] | None = None, label: str = "--set") -> dict:
    """``NODE.INPUT=VALUE`` overrides: NODE is a node id, a node title or a class type that occurs once;
    VALUE is read as JSON when it parses (numbers, true/false, lists), else as text. An input that is
    connected to another node gets the value instead (e.g. a fixed size instead of Output Size's); a
    note saying so is added to ``notes``. ``label`` names the overrides in messages (``--set``, or a jobs
    file's ``set`` column)."""
    wf = json.loads(json.dumps(workflow))
    for item in sets or []:
        target, equals, raw = item.partition("=")
        node_ref, dot, name = target.strip().rpartition(".")
        if not equals or not dot or not node_ref or not name:
            raise FantasyPortraitError(f"{label} {item!r}: write NODE.INPUT=VALUE, NODE being a node id or title "
                                       "(e.g. 19.seed=7 or \"FantasyPortrait Sampler.portrait_cfg=3.5\").")
        ids = ([node_ref] if node_ref in wf else
               [k for k, n in wf.items() if n.get("_meta", {}).get("title") == node_ref]
               or [k for k, n in wf.items() if n.get("class_type") == node_ref])
        if not ids:
            known = ", ".join(f"{k} ({n.get('_meta', {}).get('title') or n['class_type']})"
                              for k, n in sorted(wf.items(), key=lambda kv: node_order(kv[0])))
            raise FantasyPortraitError(f"{label} {item!r}: the workflow has no node {node_ref!r}. Its nodes: {known}.")
        if len(ids) > 1:
            raise FantasyPortraitError(f"{label} {item!r}: {len(ids)} nodes are called {node_ref!r} "
                                       f"(ids {', '.join(sorted(ids))}); use the node id.")
        node = wf[ids[0]]
        if name not in node["inputs"]:
            raise FantasyPortraitError(f"{label} {item!r}: node {ids[0]} ({node['class_type']}) has no input {name!r}; "
                                       f"its inputs: {', '.join(sorted(node['inputs']))}.")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        link = node["inputs"][name]
        if isinstance(link, list) and len(link) == 2 and notes is not None:
            notes.append(f"{label} {item}: {node['class_type']}.{name} now takes this value instead of node "
                         f"{link[0]}'s output {link[1]}")
        node["inputs"][name] = value
    return wf


#: model-file inputs and the ComfyUI models/ folder each belongs in
MODEL_FOLDERS = {"unet_name": "diffusion_models", "vae_name": "vae", "lora_name": "loras", "clip_name": "text_encoders",
                 "ckpt_name": "checkpoints", "model_name": "fantasyportrait", "detector": "fantasyportrait",
                 "landmarks": "fantasyportrait", "motion_encoder": "fantasyportrait"}
MODEL_FOLDERS_BY_NODE = {("CLIPVisionLoader", "clip_name"): "clip_vision"}


def _choices(spec):
    """The allowed values of a combo input in /object_info (V1 ``[[...], {...}]`` or V3 ``["COMBO", {options}]``)."""
    if isinstance(spec, list) and spec:
        if isinstance(spec[0], list):
            return spec[0]
        if spec[0] == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
            return spec[1].get("options")
    return None


def check_workflow(workflow: dict, object_info: dict) -> None:
    """Before queueing: every node type exists on the server and every model file the workflow names is
    in the server's lists; otherwise a :class:`RunError` that says what is missing and where it goes."""
    unknown = sorted({n["class_type"] for n in workflow.values() if n["class_type"] not in object_info})
    if unknown:
        raise RunError(f"The server has no node type(s) {', '.join(unknown)}: install the custom node pack(s) that "
                       "provide them into ComfyUI/custom_nodes/ (the FantasyPortrait nodes come from this pack) and "
                       "restart ComfyUI.")
    missing = []
    for node_id, node in sorted(workflow.items(), key=lambda kv: node_order(kv[0])):
        ctype = node["class_type"]
        spec = object_info[ctype].get("input", {})
        specs = {**spec.get("required", {}), **spec.get("optional", {})}
        for name, value in node["inputs"].items():
            folder = MODEL_FOLDERS_BY_NODE.get((ctype, name)) or MODEL_FOLDERS.get(name)
            choices = _choices(specs.get(name))
            if folder and isinstance(value, str) and choices is not None and value not in choices:
                missing.append(f"{value} (node {node_id}, {ctype}.{name}): put it in ComfyUI/models/{folder}/")
    if missing:
        raise RunError("Model file(s) missing on the server:\n  " + "\n  ".join(missing)
                       + "\nThen restart ComfyUI (or press 'r' in its window to refresh the model lists).")


def load_workflow(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            wf = json.load(fh)
    except FileNotFoundError:
        raise FantasyPortraitError(f"Workflow not found: {path}") from None
    except ValueError as exc:
        raise FantasyPortraitError(f"{path} is not valid JSON ({exc}).") from None
    if "nodes" in wf and "links" in wf:
        raise FantasyPortraitError(
            f"{path} is a UI-format workflow (for drag-and-drop). Use the API-format file (*_api.json), or export "
            "one from ComfyUI with 'Export (API)'.")
    if not isinstance(wf, dict) or not all(isinstance(n, dict) and "class_type" in n for n in wf.values()):
        raise FantasyPortraitError(f"{path} is not an API-format ComfyUI workflow.")
    return wf
