"""The shipped workflows: node types exist, links and API inputs are consistent, both formats agree."""

import glob
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

WF = os.path.join(ROOT, "workflows")
with open(os.path.join(ROOT, "tests", "data", "core_nodes.json")) as fh:
    CORE = {k: v for k, v in json.load(fh).items() if not k.startswith("_")}


def pack_nodes():
    """Input/output declarations of the pack's nodes, read without ComfyUI from the builder's table
    (tests/test_comfyui.py::test_server_lists_every_node checks that table against a real server's nodes)."""
    sys.path.insert(0, WF)
    import build_workflows

    return {k: {"inputs": {"required": [n for n, _, _ in ins if (k, n) not in build_workflows.OPTIONAL],
                           "optional": [n for n, _, _ in ins if (k, n) in build_workflows.OPTIONAL]},
                "outputs": [t for _, t in outs]}
            for k, (ins, outs) in build_workflows.NODE_DEFS.items() if k.startswith("FantasyPortrait")}


KNOWN = {**CORE, **pack_nodes()}
API_FILES = sorted(glob.glob(os.path.join(WF, "api", "*_api.json")))
UI_FILES = sorted(glob.glob(os.path.join(ROOT, "example_workflows", "*.json")))


def test_there_are_workflows_in_both_formats():
    assert [os.path.basename(p)[:-len("_api.json")] for p in API_FILES] == \
        [os.path.basename(p)[:-len(".json")] for p in UI_FILES]
    assert "fantasyportrait_single" in [os.path.basename(p)[:-5] for p in UI_FILES]


@pytest.mark.parametrize("path", API_FILES, ids=os.path.basename)
def test_api_workflow_references_exist(path):
    with open(path) as fh:
        wf = json.load(fh)
    for node_id, node in wf.items():
        ctype = node["class_type"]
        assert ctype in KNOWN, f"node {node_id}: unknown node type {ctype}"
        allowed = sum(KNOWN[ctype]["inputs"].values(), [])
        for name, value in node["inputs"].items():
            assert name in allowed, f"node {node_id} ({ctype}) has no input {name}"
            if isinstance(value, list):
                src, slot = value
                assert src in wf, f"node {node_id}.{name} links to missing node {src}"
                outputs = KNOWN[wf[src]["class_type"]]["outputs"]
                assert 0 <= slot < len(outputs), f"node {node_id}.{name} uses output {slot} of {src}"
        for name in KNOWN[ctype]["inputs"].get("required", []):
            assert name in node["inputs"], f"node {node_id} ({ctype}) lacks required input {name}"


@pytest.mark.parametrize("path", UI_FILES, ids=os.path.basename)
def test_ui_workflow_links_are_consistent(path):
    with open(path) as fh:
        wf = json.load(fh)
    nodes = {n["id"]: n for n in wf["nodes"]}
    assert wf["last_node_id"] == max(nodes) and wf["last_link_id"] == len(wf["links"])
    for link_id, src, src_slot, dst, dst_slot, typ in wf["links"]:
        assert nodes[src]["type"] in KNOWN and nodes[dst]["type"] in KNOWN
        assert link_id in nodes[src]["outputs"][src_slot]["links"]
        assert nodes[dst]["inputs"][dst_slot]["link"] == link_id
        assert nodes[src]["outputs"][src_slot]["type"] == typ or typ in ("INT", "FLOAT")


def test_formats_agree_and_builder_is_current(tmp_path):
    for api_path, ui_path in zip(API_FILES, UI_FILES):
        with open(api_path) as fh:
            api = json.load(fh)
        with open(ui_path) as fh:
            ui = json.load(fh)
        graph_nodes = [n for n in ui["nodes"] if n["type"] != "Note"]  # notes exist in the UI only
        assert sorted(api, key=int) == [str(i) for i in sorted(n["id"] for n in graph_nodes)]
        for n in graph_nodes:
            assert api[str(n["id"])]["class_type"] == n["type"]
    # the committed files are what the builder writes (built into tmp_path: tests never write the work tree)
    subprocess.run([sys.executable, os.path.join(WF, "build_workflows.py"), str(tmp_path)], check=True,
                   capture_output=True)
    for p in API_FILES + UI_FILES:
        built = tmp_path / os.path.relpath(p, ROOT)
        assert open(p).read() == built.read_text(), f"{p} is not what build_workflows.py writes: run it"


def test_single_workflow_uses_released_settings_and_driving_fps():
    with open(os.path.join(WF, "api", "fantasyportrait_single_api.json")) as fh:
        wf = json.load(fh)
    by_type = {n["class_type"]: n for n in wf.values()}
    sampler = by_type["FantasyPortraitSampler"]["inputs"]
    assert (sampler["cfg"], sampler["portrait_cfg"], sampler["steps"]) == (1.0, 4.0, 30)
    assert by_type["ModelSamplingSD3"]["inputs"]["shift"] == 5.0
    video = by_type["CreateVideo"]["inputs"]
    tracker = [k for k, n in wf.items() if n["class_type"] == "FantasyPortraitFaceTracker"][0]
    encode = [k for k, n in wf.items() if n["class_type"] == "FantasyPortraitEncode"][0]
    assert wf[encode]["inputs"]["person"] == -1  # the largest face drives (released rule)
    # the motion's fps, and the clip's audio from the first used frame on
    assert video["fps"] == [encode, 2] and video["audio"] == [tracker, 4]
    # the tracker reads the VIDEO itself (only the used frames), 81 frames at the clip's rate (released)
    assert not any(n["class_type"] == "GetVideoComponents" for n in wf.values())
    loader = [k for k, n in wf.items() if n["class_type"] == "LoadVideo"][0]
    assert {k: wf[tracker]["inputs"][k] for k in ("video", "start_frame", "length", "fps")} == {
        "video": [loader, 0], "start_frame": 0, "length": 81, "fps": 0.0}
    assert by_type["WanImageToVideo"]["inputs"]["length"][1] == 1  # from FantasyPortrait Encode's num_frames


def test_multi_workflows_take_the_fps_of_the_motion():
    for name in ("fantasyportrait_two_from_one_video", "fantasyportrait_people_from_videos"):
        with open(os.path.join(WF, "api", f"{name}_api.json")) as fh:
            wf = json.load(fh)
        combine = [k for k, n in wf.items() if n["class_type"] == "FantasyPortraitMultiCombine"][0]
        video = [n for n in wf.values() if n["class_type"] == "CreateVideo"][0]["inputs"]
        assert video["fps"] == [combine, 3], name
        trackers = [n["inputs"] for n in wf.values() if n["class_type"] == "FantasyPortraitFaceTracker"]
        assert trackers and all(t["fps"] == 25.0 and t["length"] == 81 for t in trackers), name  # released


@pytest.mark.parametrize("name, embeds, fps_slot", [("fantasyportrait_long", "FantasyPortraitEncode", 2),
                                                     ("fantasyportrait_long_people_from_videos",
                                                      "FantasyPortraitMultiCombine", 3)])
def test_long_workflows_animate_the_whole_clip(name, embeds, fps_slot):
    """The long twins: every tracker on the whole clip, Long Video (released sampling settings, chunks of 81 with an
    overlap of 9) fed like the one-pass Sampler, straight into Save Video with the first clip's audio."""
    with open(os.path.join(WF, "api", f"{name}_api.json")) as fh:
        wf = json.load(fh)
    ids = {}
    for k, n in wf.items():
        ids.setdefault(n["class_type"], []).append(k)
    assert not {"WanImageToVideo", "FantasyPortraitSampler", "VAEDecode", "CreateVideo"} & set(ids)
    assert all(wf[t]["inputs"]["length"] == 0 for t in ids["FantasyPortraitFaceTracker"])
    (long_id,) = ids["FantasyPortraitLongVideo"]
    long = wf[long_id]["inputs"]
    assert {k: long[k] for k in ("steps", "cfg", "portrait_cfg", "chunk_length", "overlap", "colour_match")} == {
        "steps": 30, "cfg": 1.0, "portrait_cfg": 4.0, "chunk_length": 81, "overlap": 9, "colour_match": "portrait"}
    source = ids[embeds][-1] if embeds == "FantasyPortraitMultiCombine" else ids[embeds][0]
    assert long["portrait_embeds"] == [source, 0] and long["fps"] == [source, fps_slot]
    assert long["audio"] == [sorted(ids["FantasyPortraitFaceTracker"], key=int)[0], 4]
    assert long["start_image"] == [ids["LoadImage"][0], 0] and long["model"] == [ids["ModelSamplingSD3"][0], 0]
    assert wf[ids["SaveVideo"][0]]["inputs"]["video"] == [long_id, 0]


def test_the_fast_workflow_puts_the_distill_lora_on_the_model():
    """fantasyportrait_fast: the single graph with lightx2v's distill LoRA (the file setup --fast downloads) between
    the Wan loader and the shift, and the distilled model's settings: 4 LCM steps, cfg 1, portrait_cfg 1."""
    from fantasyportrait_tools.setup import DISTILL_LORA

    with open(os.path.join(WF, "api", "fantasyportrait_fast_api.json")) as fh:
        wf = json.load(fh)
    by_type = {n["class_type"]: (k, n["inputs"]) for k, n in wf.items()}
    lora_id, lora = by_type["LoraLoaderModelOnly"]
    assert lora == {"model": [by_type["UNETLoader"][0], 0], "lora_name": DISTILL_LORA.name, "strength_model": 1.0}
    assert by_type["ModelSamplingSD3"][1] == {"model": [lora_id, 0], "shift": 5.0}
    sampler = by_type["FantasyPortraitSampler"][1]
    assert {k: sampler[k] for k in ("steps", "cfg", "portrait_cfg", "sampler_name", "scheduler")} == {
        "steps": 4, "cfg": 1.0, "portrait_cfg": 1.0, "sampler_name": "lcm", "scheduler": "simple"}


def test_sizes_come_from_the_portrait_in_every_workflow():
    for path in API_FILES:
        name = os.path.basename(path)
        with open(path) as fh:
            wf = json.load(fh)
        size = [k for k, n in wf.items() if n["class_type"] == "FantasyPortraitOutputSize"]
        assert len(size) == 1, name
        image = [k for k, n in wf.items() if n["class_type"] == "LoadImage"][0]
        loader = [k for k, n in wf.items() if n["class_type"] == "FantasyPortraitFaceModelLoader"][0]
        # the portrait's face is checked before sampling
        assert wf[size[0]]["inputs"] == {"image": [image, 0], "resolution": "480p", "face_models": [loader, 0]}
        for node in wf.values():
            if node["class_type"] in ("WanImageToVideo", "FantasyPortraitMultiCombine", "FantasyPortraitLongVideo"):
                assert (node["inputs"]["width"], node["inputs"]["height"]) == ([size[0], 0], [size[0], 1]), name


@pytest.mark.parametrize("path", UI_FILES, ids=os.path.basename)
def test_ui_workflows_read_like_templates(path):
    """Groups per stage (models, inputs, motion, sampling, output; and the motion check where a graph has one)
    around exactly their nodes, and a note with every model file, its folder and its link (the pack's own list, as
    setup downloads it)."""
    sys.path.insert(0, ROOT)
    from fantasyportrait_tools.setup import model_files

    with open(path) as fh:
        ui = json.load(fh)
    titles = [g["title"].split(":")[0] for g in ui["groups"]]
    checks = any(n["type"] == "FantasyPortraitMotionCheck" for n in ui["nodes"])
    assert titles == ["Models", "Inputs", "Motion", "Sampling", "Output"] + (["Check"] if checks else [])
    for node in ui["nodes"]:
        if node["type"] == "Note":
            continue
        x, y = node["pos"]
        inside = [g["title"] for g in ui["groups"] if g["bounding"][0] <= x and x + 340 <= g["bounding"][0] +
                  g["bounding"][2] and g["bounding"][1] <= y <= g["bounding"][1] + g["bounding"][3]]
        assert len(inside) == 1, (node["type"], inside)  # every node in exactly one stage
    (note,) = [n for n in ui["nodes"] if n["type"] == "Note"]
    text = note["widgets_values"][0]
    for item in model_files():
        assert f"models/{item.folder}/{item.name}" in text and f"huggingface.co/{item.repo}/blob/main/{item.path}" in text
