"""Writes the shareable workflows in both formats from one description.

    python workflows/build_workflows.py [ROOT]   (default: the pack's folder)

UI format (``example_workflows/*.json``: drag and drop, also listed in ComfyUI's template browser) and API
format (``workflows/api/*_api.json``: for ``/prompt`` and ``fantasyportrait run``). Model file names
are the ones the README lists; the inputs are the pack's examples.
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)  # the pack's own model list (fantasyportrait_tools.setup) and example inputs
sys.path.insert(0, HERE)

from node_defs import NODE_DEFS, OPTIONAL, UI_EXTRA_WIDGETS  # noqa: E402 (the node table, beside this file)
from fantasyportrait_tools import example_inputs  # noqa: E402 (the pack's example inputs)

#: the stages the UI graphs are laid out and grouped by (one band each, top to bottom), and their node types
STAGES = [
    ("Models", "#335", ("UNETLoader", "LoraLoaderModelOnly", "ModelSamplingSD3", "CLIPLoader", "CLIPVisionLoader", "VAELoader",
                        "FantasyPortraitModelLoader", "FantasyPortraitFaceModelLoader")),
    ("Inputs: the portrait and the driving video", "#353", (
        "LoadImage", "LoadVideo", "CLIPTextEncode", "CLIPVisionEncode", "FantasyPortraitOutputSize")),
    ("Motion: faces, expression features, tokens", "#553", (
        "FantasyPortraitFaceTracker", "FantasyPortraitExpressionExtractor", "FantasyPortraitMotionControl",
        "FantasyPortraitEncode", "FantasyPortraitMultiCombine")),
    ("Sampling: Wan 2.1 I2V with the portrait", "#535", (
        "WanImageToVideo", "FantasyPortraitSampler", "FantasyPortraitLongVideo", "FantasyPortraitApply", "FantasyPortraitGuider", "RandomNoise",
        "KSamplerSelect", "BasicScheduler", "SamplerCustomAdvanced")),
    ("Output: the video with the driving audio", "#355", ("VAEDecode", "CreateVideo", "SaveVideo")),
    ("Check: does the output follow its driver?", "#345", ("FantasyPortraitMotionCheck",)),
]
PREVIEWS = ("PreviewImage", "PreviewAny")  # shown in the stage of the node they preview
NOTE_ID = 99  # the model-files note (a frontend-only node: it has no API twin)

NEGATIVE = ("bright tones, overexposed, static, blurred details, subtitles, style, works, paintings, images, static, "
            "overall gray, worst quality, low quality, JPEG compression residue, ugly, incomplete, extra fingers, "
            "poorly drawn hands, poorly drawn faces, deformed, disfigured, misshapen limbs, fused fingers, still "
            "picture, messy background, three legs, many people in the background, walking backwards")


def common(portrait_embeds, num_frames, fps, audio, prompt="a person speaking naturally, expressive face, high quality"):
    """Wan 2.1 I2V, text and CLIP-vision conditioning, the sampler, decoding and saving: the part every
    workflow shares. Node ids 1-9 and 18-22; the portrait chain supplies the rest."""
    return [
        (1, "UNETLoader", "Load Diffusion Model (Wan 2.1 I2V 14B)",
         {"unet_name": "wan2.1_i2v_480p_14B_fp8_e4m3fn.safetensors", "weight_dtype": "default"}),
        (2, "ModelSamplingSD3", "Shift 5 (released)", {"model": (1, 0), "shift": 5.0}),
        (3, "CLIPLoader", None, {"clip_name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "type": "wan",
                                 "device": "default"}),
        (4, "CLIPTextEncode", "Positive prompt", {"text": prompt, "clip": (3, 0)}),
        (5, "CLIPTextEncode", "Negative prompt", {"text": NEGATIVE, "clip": (3, 0)}),
        (6, "CLIPVisionLoader", None, {"clip_name": "clip_vision_h.safetensors"}),
        (7, "LoadImage", "Portrait image", {"image": "portrait.png"}),
        (8, "CLIPVisionEncode", None, {"clip_vision": (6, 0), "image": (7, 0), "crop": "none"}),
        (9, "VAELoader", None, {"vae_name": "wan_2.1_vae.safetensors"}),
        (18, "WanImageToVideo", None, {"positive": (4, 0), "negative": (5, 0), "vae": (9, 0), "width": (24, 0),
                                       "height": (24, 1), "length": num_frames, "batch_size": 1,
                                       "clip_vision_output": (8, 0), "start_image": (7, 0)}),
        (19, "FantasyPortraitSampler", None, {"model": (2, 0), "adapter": (16, 0), "portrait_embeds": portrait_embeds,
                                              "portrait_strength": 1.0, "start_percent": 0.0, "end_percent": 1.0,
                                              "positive": (18, 0), "negative": (18, 1), "latent_image": (18, 2),
                                              "seed": 42, "steps": 30, "cfg": 1.0, "portrait_cfg": 4.0,
                                              "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}),
        (24, "FantasyPortraitOutputSize", "Output size: the portrait's aspect at 480p",
         {"image": (7, 0), "resolution": "480p", "face_models": (12, 0)}),
        (20, "VAEDecode", None, {"samples": (19, 0), "vae": (9, 0)}),
        (21, "CreateVideo", "Video at the motion's fps, with the driving audio", {"images": (20, 0), "fps": fps,
                                                                         "audio": audio}),
        (22, "SaveVideo", None, {"video": (21, 0), "filename_prefix": "video/FantasyPortrait", "format": "auto",
                                 "codec": "auto"}),
    ]


def driver(video_id, tracker_id, extractor_id, persons, fps, title="Driving video"):
    """Load Video -> face tracker (decodes only the used frames; + preview) -> expression features."""
    return [
        (video_id, "LoadVideo", title, {"file": "driving.mp4"}),
        (tracker_id, "FantasyPortraitFaceTracker", None, {"face_models": (12, 0), "min_face": 96, "persons": persons,
                                                          "video": (video_id, 0), "start_frame": 0, "length": 81,
                                                          "fps": fps}),
        (tracker_id + 1, "PreviewImage", "Tracked faces", {"images": (tracker_id, 2)}),
        (extractor_id, "FantasyPortraitExpressionExtractor", None, {"face_models": (12, 0), "tracks": (tracker_id, 0),
                                                                    "fps": 0.0}),
    ]


LOADERS = [
    (12, "FantasyPortraitFaceModelLoader", None, {"detector": "face_det.onnx", "landmarks": "face_landmark.onnx",
                                                  "motion_encoder": "pd_fpg.pth", "device": "auto",
                                                  "insightface_dir": ""}),
    (16, "FantasyPortraitModelLoader", None, {"model_name": "fantasyportrait_model.ckpt", "dtype": "bf16"}),
]


def encode(node_id, features, person):
    return (node_id, "FantasyPortraitEncode", f"Encode person {person + 1}" if person > 0 else None,
            {"adapter": (16, 0), "features": features, "person": person, "num_frames": 0, "frame_fit": "trim",
             "proj_scale": 1.0, "mouth_scale": 1.0, "emo_scale": 1.0, "fps": 0.0})


def single_portrait():
    """One portrait, one driving video: the released single-person setting."""
    return sorted(common((17, 0), (17, 1), (17, 2), (13, 4)) + LOADERS + driver(10, 13, 15, 0, 0.0)
                  + [encode(17, (15, 0), -1)], key=lambda n: n[0])  # -1: the largest face drives (released)


def custom_sampling():
    """One portrait, one driving video, with the motion edited before encoding (FantasyPortrait Motion Control:
    head pose calmed to 70 %, the rest followed) and sampled by ComfyUI's SamplerCustomAdvanced with the patched
    MODEL (FantasyPortrait Apply) and the portrait guidance (FantasyPortrait Guider): the same result as the
    all-in-one Sampler, with ComfyUI's noise, sampler and scheduler nodes free to swap."""
    control = {"features": (15, 0), "person": -1, "reference_frame": 0}
    for component in ("headpose", "eye", "emo", "mouth"):
        mode, amount = ("scale", 0.7) if component == "headpose" else ("follow", 1.0)
        control.update({f"{component}_mode": mode, f"{component}_amount": amount, f"{component}_smooth": 0.0})
    chain = [
        (50, "FantasyPortraitMotionControl", "Motion control (head pose calmed)", control),
        (51, "PreviewImage", "Motion before/after", {"images": (50, 1)}),
        encode(17, (50, 0), -1),
        (52, "FantasyPortraitApply", None, {"model": (2, 0), "adapter": (16, 0), "portrait_embeds": (17, 0),
                                           "portrait_strength": 1.0, "start_percent": 0.0, "end_percent": 1.0}),
        (53, "FantasyPortraitGuider", None, {"model": (52, 0), "positive": (18, 0), "negative": (18, 1), "cfg": 1.0,
                                            "portrait_cfg": 4.0}),
        (54, "RandomNoise", None, {"noise_seed": 42}),
        (55, "KSamplerSelect", None, {"sampler_name": "euler"}),
        (56, "BasicScheduler", None, {"model": (52, 0), "scheduler": "simple", "steps": 30, "denoise": 1.0}),
        (57, "SamplerCustomAdvanced", None, {"noise": (54, 0), "guider": (53, 0), "sampler": (55, 0),
                                             "sigmas": (56, 0), "latent_image": (18, 2)}),
        # the check: how closely the render follows the driver as driven (the head pose shows the 70 % calming)
        (58, "FantasyPortraitMotionCheck", "Motion check: the render against its driver", {
            "face_models": (12, 0), "driver": (15, 0), "images": (20, 0), "fps": 0.0, "mapping": "",
            "max_offset": 15, "insightface_dir": ""}),
        (59, "PreviewImage", "Motion check: curves and leakage", {"images": (58, 1)}),
        (62, "PreviewAny", "Motion check: report", {"source": (58, 0)}),
    ]
    base = [n for n in common((17, 0), (17, 1), (17, 2), (13, 4)) if n[1] != "FantasyPortraitSampler"]
    base = [(i, c, t, {**v, "samples": (57, 0)} if c == "VAEDecode" else v) for i, c, t, v in base]
    return sorted(base + LOADERS + driver(10, 13, 15, 0, 0.0) + chain, key=lambda n: n[0])


MULTI_PROMPT = "two people talking to each other, natural expressions, high quality"


def combine_node(embeds):
    inputs = {"face_models": (12, 0), "image": (7, 0), "width": (24, 0), "height": (24, 1), "mapping": "",
              "background": "all", "strengths": ""}
    inputs.update({f"embeds_{i + 1}": e for i, e in enumerate(embeds)})
    return [(30, "FantasyPortraitMultiCombine", "Multi-portrait: regions and masks", inputs),
            (31, "PreviewImage", "Regions", {"images": (30, 2)})]


def two_from_one_video():
    """Two people in the portrait, driven by the two people of one driving video (left to right)."""
    return sorted(common((30, 0), (30, 1), (30, 3), (13, 4), MULTI_PROMPT) + LOADERS + driver(10, 13, 15, 2, 25.0)
                  + [encode(17, (15, 0), 0), encode(23, (15, 0), 1)] + combine_node([(17, 0), (23, 0)]),
                  key=lambda n: n[0])


def people_from_videos():
    """N people in the portrait, one driving video each (here N = 2; add drivers and connect embeds_3/4 for
    more). Audio and fps come from the first video; both clips are retimed to 25 fps (released)."""
    second = driver(40, 42, 44, 1, 25.0, "Driving video 2")
    return sorted(common((30, 0), (30, 1), (30, 3), (13, 4), MULTI_PROMPT) + LOADERS + driver(10, 13, 15, 1, 25.0)
                  + second + [encode(17, (15, 0), 0), encode(23, (44, 0), 0)]
                  + combine_node([(17, 0), (23, 0)]), key=lambda n: n[0])


def long_of(graph):
    """The long-video twin of a one-pass graph: every Face Tracker on the whole clip, and FantasyPortrait Long Video
    (chunks of 81 frames, each after the first from the last 9 of the one before) in place of WanImageToVideo,
    the Sampler, VAE Decode and Create Video, writing the video for Save Video as it goes."""
    sampler, video, i2v = (next(v for _, c, _, v in graph if c == cls)
                           for cls in ("FantasyPortraitSampler", "CreateVideo", "WanImageToVideo"))
    out = []
    for i, c, t, v in graph:
        if c in ("WanImageToVideo", "FantasyPortraitSampler", "VAEDecode", "CreateVideo"):
            continue
        if c == "FantasyPortraitFaceTracker":
            v = {**v, "length": 0}  # the whole clip
        out.append((i, c, t, {**v, "video": (60, 0)} if c == "SaveVideo" else v))
    out.append((60, "FantasyPortraitLongVideo", "Long video: every frame of the driving clip, chunk by chunk", {
        "model": sampler["model"], "adapter": sampler["adapter"], "portrait_embeds": sampler["portrait_embeds"],
        "portrait_strength": 1.0, "start_percent": 0.0, "end_percent": 1.0, "positive": i2v["positive"],
        "negative": i2v["negative"], "vae": i2v["vae"], "start_image": i2v["start_image"], "width": i2v["width"],
        "height": i2v["height"], "seed": 42, "steps": 30, "cfg": 1.0, "portrait_cfg": 4.0, "sampler_name": "euler",
        "scheduler": "simple", "chunk_length": 81, "overlap": 9, "colour_match": "portrait", "fps": video["fps"],
        "clip_vision_output": i2v["clip_vision_output"], "audio": video["audio"]}))
    return sorted(out, key=lambda n: n[0])


FAST = dict(steps=4, cfg=1.0, portrait_cfg=1.0, sampler_name="lcm", scheduler="simple")


def fast():
    """The single portrait in minutes: lightx2v's step/cfg-distill LoRA for Wan 2.1 I2V 480p on the model (its
    settings: 4 steps, LCM, cfg 1, shift 5) and portrait_cfg 1, so every step is one model pass."""
    from fantasyportrait_tools.setup import DISTILL_LORA

    graph = []
    for i, c, t, v in single_portrait():
        if c == "ModelSamplingSD3":
            v = {**v, "model": (70, 0)}
        elif c == "FantasyPortraitSampler":
            v = {**v, **FAST}
        graph.append((i, c, t, v))
    lora = (70, "LoraLoaderModelOnly", "Step/CFG-distill LoRA (lightx2v, 4 steps)",
            {"model": (1, 0), "lora_name": DISTILL_LORA.name, "strength_model": 1.0})
    return sorted(graph + [lora], key=lambda n: n[0])


def to_api(graph):
    out = {}
    for node_id, ctype, title, values in graph:
        inputs = {k: ([str(v[0]), v[1]] if isinstance(v, tuple) else v) for k, v in values.items()}
        out[str(node_id)] = {"class_type": ctype, "inputs": inputs, "_meta": {"title": title or ctype}}
    return out


def to_ui(graph):
    nodes, links = [], []
    outputs_links = {}
    by_id = {node_id: (ctype, values) for node_id, ctype, _, values in graph}
    for node_id, ctype, _title, values in graph:
        for name, v in values.items():
            if isinstance(v, tuple):
                link_id = len(links) + 1
                in_type = next(t for n, t, _ in NODE_DEFS[ctype][0] if n == name)
                if in_type == "*":  # an input of any type: the link carries the type of what is connected
                    in_type = NODE_DEFS[by_id[v[0]][0]][1][v[1]][1]
                links.append([link_id, v[0], v[1], node_id, name, in_type])
                outputs_links.setdefault((v[0], v[1]), []).append(link_id)
    # lay nodes out in columns by their distance from the loaders, so the graph reads left to right
    depth = {}

    def depth_of(node_id):
        if node_id not in depth:
            values = by_id[node_id][1]
            depth[node_id] = 1 + max((depth_of(v[0]) for v in values.values() if isinstance(v, tuple)), default=-1)
        return depth[node_id]

    # one band per stage, top to bottom; inside a band, columns by depth
    stage_of_type = {ctype: k for k, (_, _, types) in enumerate(STAGES) for ctype in types}

    def stage_of(node_id):
        ctype, values = by_id[node_id]
        if ctype in PREVIEWS:
            return stage_of(next(v[0] for v in values.values() if isinstance(v, tuple)))
        return stage_of_type[ctype]

    positions, groups, top = {}, [], 60
    for k, (title, colour, _) in enumerate(STAGES):
        members = [(node_id, ctype) for node_id, ctype, _, _ in graph if stage_of(node_id) == k]
        if not members:
            continue
        column_y = {}
        for node_id, ctype in members:
            col = depth_of(node_id)
            widgets = sum(1 for _, _, w in NODE_DEFS[ctype][0] if w)
            y = column_y.get(col, top + 50)
            positions[node_id] = [60 + 400 * col, y]
            column_y[col] = y + 140 + 30 * widgets
        left = min(positions[i][0] for i, _ in members) - 20
        right = max(positions[i][0] for i, _ in members) + 360
        bottom = max(column_y.values())
        groups.append({"title": title, "bounding": [left, top, right - left, bottom - top], "color": colour,
                       "font_size": 24, "flags": {}})
        top = bottom + 60
    for order, (node_id, ctype, title, values) in enumerate(graph):
        ins, outs = NODE_DEFS[ctype]
        node_inputs, widgets = [], []
        for name, typ, is_widget in ins:
            link = next((lnk[0] for lnk in links if lnk[3] == node_id and lnk[4] == name), None)
            if is_widget:
                value = values.get(name)
                widgets.append(value if not isinstance(value, tuple) else 0)
                extra = UI_EXTRA_WIDGETS.get((ctype, name))
                if extra is not None:
                    widgets.append(extra)
                if link is not None:
                    node_inputs.append({"name": name, "type": typ, "widget": {"name": name}, "link": link})
            elif name in values:
                node_inputs.append({"name": name, "type": typ, "link": link})
        node = {
            "id": node_id, "type": ctype,
            "pos": positions[node_id], "size": [340, 60 + 26 * len(widgets)],
            "flags": {}, "order": order, "mode": 0,
            "inputs": node_inputs,
            "outputs": [{"name": n, "type": t, "links": outputs_links.get((node_id, i), []), "slot_index": i}
                        for i, (n, t) in enumerate(outs)],
            "properties": {"Node name for S&R": ctype},
            "widgets_values": widgets,
        }
        if title:
            node["title"] = title
        nodes.append(node)
    # links in the UI format refer to slot indices
    ui_links = []
    for link_id, src, src_slot, dst, name, typ in links:
        dst_node = next(n for n in nodes if n["id"] == dst)
        slot = next(i for i, inp in enumerate(dst_node["inputs"]) if inp["name"] == name)
        ui_links.append([link_id, src, src_slot, dst, slot, typ])
    nodes.append(model_note(order + 1, [60, top], fast=any(n[1] == "LoraLoaderModelOnly" for n in graph)))
    return {"last_node_id": max(n["id"] for n in nodes), "last_link_id": len(ui_links), "nodes": nodes,
            "links": ui_links, "groups": groups, "config": {}, "extra": {}, "version": 0.4}


def model_note(order, pos, fast=False):
    """A note listing the model files (the pack's own list, as `fantasyportrait setup` downloads them; with the
    distill LoRA for the fast graph), their folders and where they come from."""
    from fantasyportrait_tools.setup import model_files

    command = "fantasyportrait setup --comfyui <your ComfyUI>" + (" --fast" if fast else "")
    lines = [f"Model files (or let `{command}` download them all):", ""]
    for item in model_files(fast=fast):
        lines.append(f"models/{item.folder}/{item.name}")
        lines.append(f"    https://huggingface.co/{item.repo}/blob/main/{item.path}")
    lines += ["", "Other Wan 2.1 I2V variants (bf16, 720p) work too: pick them in Load Diffusion Model.",
              "Kijai's Wan2_1_FantasyPortrait_fp16.safetensors replaces fantasyportrait_model.ckpt and pd_fpg.pth."]
    return {"id": NOTE_ID, "type": "Note", "pos": pos, "size": [760, 420], "flags": {}, "order": order, "mode": 0,
            "inputs": [], "outputs": [], "properties": {}, "widgets_values": ["\n".join(lines)],
            "title": "FantasyPortrait: model files", "color": "#432", "bgcolor": "#653"}


WORKFLOWS = {
    "fantasyportrait_single": single_portrait,
    "fantasyportrait_two_from_one_video": two_from_one_video,
    "fantasyportrait_people_from_videos": people_from_videos,
    "fantasyportrait_custom_sampling": custom_sampling,
    "fantasyportrait_long": lambda: long_of(single_portrait()),
    "fantasyportrait_long_people_from_videos": lambda: long_of(people_from_videos()),
    "fantasyportrait_fast": fast,
}


def with_examples(name, graph):
    """The graph loading the pack's example inputs (as ``fantasyportrait setup`` and ``install.py`` copy them into
    ComfyUI's input folder), its LoadVideo nodes in node-id order as the runner fills them."""
    image, videos = example_inputs.BY_WORKFLOW[name]
    videos = iter(videos)
    out = []
    for i, c, t, v in graph:
        if c == "LoadImage":
            v = {**v, "image": example_inputs.PREFIX + image}
        elif c == "LoadVideo":
            v = {**v, "file": example_inputs.PREFIX + next(videos)}
        out.append((i, c, t, v))
    return out


def main(root=ROOT):
    """UI graphs into ``example_workflows/`` (the template browser's folder: ComfyUI serves a pack's templates
    from the first of example_workflows, example, examples, workflow, workflows that exists, and the pack's
    example inputs live in ``examples/``), API graphs into ``workflows/api/``."""
    ui_dir, api_dir = os.path.join(root, "example_workflows"), os.path.join(root, "workflows", "api")
    os.makedirs(ui_dir, exist_ok=True)
    os.makedirs(api_dir, exist_ok=True)
    for name, build in WORKFLOWS.items():
        graph = with_examples(name, sorted(build(), key=lambda n: n[0]))
        with open(os.path.join(ui_dir, f"{name}.json"), "w") as fh:
            json.dump(to_ui(graph), fh, indent=1)
            fh.write("\n")
        with open(os.path.join(api_dir, f"{name}_api.json"), "w") as fh:
            json.dump(to_api(graph), fh, indent=1)
            fh.write("\n")
        print(f"wrote example_workflows/{name}.json and workflows/api/{name}_api.json in {root}")


if __name__ == "__main__":
    import sys

    main(sys.argv[1] if len(sys.argv) > 1 else ROOT)
