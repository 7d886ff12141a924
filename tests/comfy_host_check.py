"""Run inside a real ComfyUI's Python (see tests/test_comfyui.py): exactness checks of the Wan patch.

argv: COMFYUI_DIR REPO_DIR. Prints one JSON object with the measured numbers.
"""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__))))

from comfy_inproc import boot  # noqa: E402

REPO = os.path.abspath(sys.argv[2])
H = boot(sys.argv[1], sys.argv[2])
torch, model, adapter, embeds, portrait, fp = H.torch, H.model, H.adapter, H.embeds, H.portrait, H.fp
positive, negative, latent, g = H.positive, H.negative, H.latent, H.g
import nodes  # noqa: E402
from fantasyportrait_pack.fantasyportrait_core.branch.attention import adapter_cross_attention, project_window_kv  # noqa: E402

# what ComfyUI's loader does with the pack: no V1 mappings, so it calls the V3 entry point
import asyncio  # noqa: E402
from comfy_api.latest import ComfyExtension, io as comfy_io  # noqa: E402

extension = asyncio.run(H.pack.comfy_entrypoint())
node_list = asyncio.run(extension.get_node_list())
result = {"nodes": sorted(node.GET_SCHEMA().node_id for node in node_list),
          "entrypoint": [isinstance(extension, ComfyExtension), not hasattr(H.pack, "NODE_CLASS_MAPPINGS"),
                         all(issubclass(node, comfy_io.ComfyNode) for node in node_list)]}


def run_fp(strength, cfg, pcfg, start=0.0, end=1.0):
    return fp.FantasyPortraitSampler(model, adapter, portrait, strength, start, end, positive, negative,
                                              latent, 7, 3, cfg, pcfg, "euler", "simple", 1.0)[0]["samples"]


stock = nodes.common_ksampler(model, 7, 3, 3.0, "euler", "simple", positive, negative, latent)[0]["samples"]
off = run_fp(0.0, 3.0, 1.0)
on = run_fp(1.0, 3.0, 1.0)
result["off_equals_stock"] = bool(torch.equal(off, stock))
result["on_rel_diff"] = float((on - stock).norm() / stock.norm())
patched = fp.FantasyPortraitApply(model, adapter, portrait, 1.0, 0.0, 1.0)[0]
plain_on = nodes.common_ksampler(patched, 7, 3, 3.0, "euler", "simple", positive, negative, latent)[0]["samples"]
result["apply_plus_ksampler_equals_sampler_pcfg1"] = float((plain_on - on).abs().max())
# Apply + Guider through SamplerCustomAdvanced equals the all-in-one sampler (3-pass guidance)
import comfy.samplers  # noqa: E402
from comfy_extras.nodes_custom_sampler import SamplerCustomAdvanced  # noqa: E402

guider = fp.FantasyPortraitGuider(patched, positive, negative, 3.0, 4.0)[0]
sigmas = comfy.samplers.KSampler(patched, steps=3, device="cpu", sampler="euler", scheduler="simple").sigmas


class Noise:
    seed = 7

    def generate_noise(self, latent):
        return comfy.sample.prepare_noise(latent["samples"], self.seed)


import comfy.sample  # noqa: E402

custom = SamplerCustomAdvanced().sample(Noise(), guider, comfy.samplers.sampler_object("euler"), sigmas, latent)
custom = (custom.result if hasattr(custom, "result") else custom)[0]["samples"]
three = run_fp(1.0, 3.0, 4.0)
result["guider_equals_sampler"] = float((custom - three).abs().max())
two = run_fp(1.0, 1.0, 4.0)
result["three_pass_finite"] = bool(torch.isfinite(three).all())
result["three_pass_rel_diff"] = float((three - on).norm() / on.norm())
result["two_pass_finite"] = bool(torch.isfinite(two).all())
result["inactive_window_equals_stock"] = bool(torch.equal(run_fp(1.0, 3.0, 1.0, start=0.99, end=1.0), stock))
result["model_untouched"] = bool(torch.equal(
    nodes.common_ksampler(model, 7, 3, 3.0, "euler", "simple", positive, negative, latent)[0]["samples"], stock))

# block level: the patch equals the native block with scale * W_o(x_ad) (no bias) added beside the
# cross-attention output (section 6 of the reference doc)
dm = model.model.diffusion_model
block = dm.blocks[1]
x = torch.randn(2, 3 * 20, 256, generator=g)
e = torch.randn(2, 6, 256, generator=g)
ctx = torch.randn(2, 257 + 12, 256, generator=g)
freqs = dm.rope_encode(3, 8, 10, device=x.device, dtype=x.dtype)
k, v = project_window_kv(embeds.windows, adapter.blocks[1][0], adapter.blocks[1][1])
scale = 0.8


def hook(module, args, kwargs, output):
    q = module.norm_q(module.q(args[0]))
    return output + torch.nn.functional.linear(adapter_cross_attention(q, k, v, 2, scale), module.o.weight)


torch.set_grad_enabled(False)
handle = block.cross_attn.register_forward_hook(hook, with_kwargs=True)
reference = block(x, e=e, freqs=freqs, context=ctx, context_img_len=257)
handle.remove()
from fantasyportrait_pack.nodes.wan_patch import PortraitBlockPatch, PortraitState  # noqa: E402
from fantasyportrait_pack.fantasyportrait_core.branch.attention import AdapterProjections  # noqa: E402
from comfy_inproc import call_block_patch  # noqa: E402
import comfy.model_patcher  # noqa: E402

state = PortraitState(comfy.model_patcher.ModelPatcher(AdapterProjections(adapter.blocks.weights), "cpu", "cpu"),
                      embeds.windows, None, scale, 0.0, 1.0, 2)
ours = call_block_patch(PortraitBlockPatch(1, state), dm, x, e, freqs, ctx)
result["block_rel_diff"] = float((ours - reference).norm() / reference.norm())

# a context window over latent frames [1, 2]: the patch uses those frames' windows only
sub = PortraitState(state.projections, embeds.windows[:, 1:3], None, scale, 0.0, 1.0, 2)
xs = x[:, 20:]  # 2 latent frames of 20 tokens
freqs2 = dm.rope_encode(2, 8, 10, device=x.device, dtype=x.dtype)
result["context_window_equal"] = bool(torch.equal(
    call_block_patch(PortraitBlockPatch(1, state), dm, xs, e, freqs2, ctx, frames=[1, 2]),
    call_block_patch(PortraitBlockPatch(1, sub), dm, xs, e, freqs2, ctx)))
result["block_branch_rel_effect"] = float((reference - block(x, e=e, freqs=freqs, context=ctx, context_img_len=257)).norm()
                                          / reference.norm())
# FantasyPortrait Encode: fps resampling, length fitting, clear errors
from fantasyportrait_pack.fantasyportrait_core.faces.tracking import FaceTracks  # noqa: E402
from fantasyportrait_pack.fantasyportrait_core.motion.extraction import ExpressionFeatures  # noqa: E402
import numpy as np  # noqa: E402

tracks = FaceTracks(np.tile(np.array([10, 10, 50, 50], np.float32), (1, 17, 1)), np.zeros((1, 17, 222, 2), np.float32),
                    np.ones((1, 17), bool), (64, 64))
features = ExpressionFeatures(torch.randn(1, 17, 554, generator=g), tracks, 30.0)
encode = fp.FantasyPortraitEncode
emb, n, rate = encode(adapter, features, 0, 0, "trim", 1.0, 1.0, 1.0, fps=15.0)
result["encode_resampled_frames"] = [n, emb.fps, list(emb.driver_boxes.shape), rate]
emb, n, rate = encode(adapter, features, 0, 21, "pad", 1.0, 1.0, 1.0)
result["encode_source_fps"] = rate
result["encode_padded_frames"] = n
for args, key in (((adapter, features, 0, 21, "trim", 1.0, 1.0, 1.0), "encode_short_error"),
                  ((adapter, features, 3, 0, "trim", 1.0, 1.0, 1.0), "encode_person_error"),
                  ((adapter, features, 0, 20, "trim", 1.0, 1.0, 1.0), "encode_count_error")):
    try:
        encode(*args)
        result[key] = None
    except Exception as exc:  # noqa: BLE001
        result[key] = str(exc)
# the frame-count widgets are checked when a prompt is queued (validate_inputs), range included
encode_check, tracker_check = fp.FantasyPortraitEncode.cls.validate_inputs, fp.FantasyPortraitFaceTracker.cls.validate_inputs
result["validate_counts"] = [encode_check(num_frames=21), encode_check(num_frames=0), encode_check(num_frames=20),
                             encode_check(num_frames=8001), encode_check(num_frames=None), tracker_check(length=81),
                             tracker_check(length=-3)]
# person -1: the largest face drives (person 1 here)
boxes2 = np.stack([np.tile(np.array(box, np.float32), (17, 1)) for box in ([0, 0, 20, 20], [30, 0, 70, 40])])
tracks2 = FaceTracks(boxes2, np.zeros((2, 17, 222, 2), np.float32), np.ones((2, 17), bool), (64, 96))
features2 = ExpressionFeatures(torch.randn(2, 17, 554, generator=g), tracks2, 25.0)
largest = encode(adapter, features2, -1, 0, "trim", 1.0, 1.0, 1.0)[0]
second = encode(adapter, features2, 1, 0, "trim", 1.0, 1.0, 1.0)[0]
result["encode_largest_is_person_1"] = bool(torch.equal(largest.embeds.windows, second.embeds.windows))
first = encode(adapter, features2, 0, 0, "trim", 1.0, 1.0, 1.0)[0]  # the person widget is not ignored
result["encode_person_0_differs"] = not torch.equal(first.embeds.windows, second.embeds.windows)

# a driving "video" of one frame is refused by the tracker node (the command line refuses it too)
try:
    fp.FantasyPortraitFaceTracker(None, 96, 0, images=torch.zeros(1, 64, 64, 3))
    result["tracker_one_frame_error"] = None
except Exception as exc:  # noqa: BLE001
    result["tracker_one_frame_error"] = str(exc)

# FantasyPortrait Output Size: the portrait's aspect at 480p
result["output_size_portrait"] = list(fp.FantasyPortraitOutputSize(torch.zeros(1, 1920, 1080, 3), "480p"))
result["output_size_landscape"] = list(fp.FantasyPortraitOutputSize(torch.zeros(1, 1080, 1920, 3), "480p"))

# FantasyPortrait Motion Control: per-person, per-component edits with a preview IMAGE
two = ExpressionFeatures(torch.randn(2, 9, 554, generator=g), None, 25.0)
widgets = {f"{c}_{k}": v for c in ("headpose", "eye", "emo", "mouth") for k, v in
           (("mode", "follow"), ("amount", 1.0), ("smooth", 0.0))}
same, _ = fp.FantasyPortraitMotionControl(two, -1, reference_frame=0, **widgets)
edited, preview = fp.FantasyPortraitMotionControl(two, 1, reference_frame=0, **{**widgets, "headpose_mode": "freeze"})
result["motion_default_identical"] = bool(torch.equal(same.features, two.features))
result["motion_person0_untouched"] = bool(torch.equal(edited.features[0], two.features[0]))
result["motion_person1_head_frozen"] = bool((edited.features[1, :, :6] == two.features[1, :1, :6]).all())
result["motion_preview"] = [list(preview.shape), float(preview.min()), float(preview.max())]

# Face Tracker on core's VIDEO (LoadVideo's VideoFromFile): only the used frames, retimed, with audio
SHARED = os.path.join(os.path.dirname(REPO), "shared")
MODELS = os.environ.get("FANTASYPORTRAIT_TEST_MODELS") or os.path.join(SHARED, "models")
CLIP = os.path.join(SHARED, "media", "jgz.mp4")
if os.path.isfile(os.path.join(MODELS, "face_det.onnx")) and os.path.isfile(CLIP):
    import numpy as np  # noqa: E402
    from comfy_api.input_impl import VideoFromFile  # noqa: E402

    from fantasyportrait_pack.fantasyportrait_core.motion.extraction import FaceModels  # noqa: E402
    from fantasyportrait_pack.fantasyportrait_core.faces.detector import FaceDetector  # noqa: E402
    from fantasyportrait_pack.fantasyportrait_core.faces.landmarks import LandmarkModel  # noqa: E402
    from fantasyportrait_pack.fantasyportrait_core.video import read_video  # noqa: E402

    faces = FaceModels(FaceDetector(os.path.join(MODELS, "face_det.onnx")),
                       LandmarkModel(os.path.join(MODELS, "face_landmark.onnx")))
    tracker = fp.FantasyPortraitFaceTracker

    def _audio_is_window_of_whole(audio, start):
        """The window's samples equal the whole clip's from ``start`` seconds on."""
        from fantasyportrait_pack.fantasyportrait_core.video import read_audio

        whole = read_audio(CLIP, 0.0)["waveform"]
        first = int(round(start * audio["sample_rate"]))
        return bool(torch.equal(audio["waveform"], whole[..., first:first + audio["waveform"].shape[-1]]))
    tracks, crops, preview, rate, audio = tracker(faces, 96, 0, video=VideoFromFile(CLIP), start_frame=4,
                                                        length=9, fps=12.0)
    # the same frames given as IMAGE (decoded whole, retimed to 12 fps, frames 4..12) give the same tracks
    whole = read_video(CLIP, fps=12.0).frames
    as_images = tracker(faces, 96, 0, images=torch.from_numpy(whole).float() / 255, start_frame=4, length=9)
    # a VIDEO made from frames (Create Video's kind): its frames are used as they are, the audio is cut too
    from fractions import Fraction  # noqa: E402

    from comfy_api.input_impl import VideoFromComponents  # noqa: E402
    from comfy_api.util import VideoComponents  # noqa: E402

    ramp = {"waveform": torch.arange(5000.0).reshape(1, 1, -1), "sample_rate": 1000}
    made = VideoFromComponents(VideoComponents(images=torch.from_numpy(whole).float() / 255, frame_rate=Fraction(12),
                                               audio=ramp))
    from_frames = tracker(faces, 96, 0, video=made, start_frame=4, length=9)
    result["tracker_components"] = [bool(np.array_equal(from_frames[0].tracks.landmarks, as_images[0].tracks.landmarks)),
                                    from_frames[3], list(from_frames[4]["waveform"][0, 0, [0, -1]].tolist()),
                                    from_frames[4]["waveform"].shape[-1]]
    import av  # noqa: E402

    with av.open(CLIP) as c:
        audio_rate = c.streams.audio[0].rate
    result["tracker_video"] = {
        "frames": tracks.tracks.num_frames, "fps": rate, "preview": list(preview.shape),
        "crops": list(crops.shape), "same_as_images": bool(np.array_equal(tracks.tracks.landmarks,
                                                                         as_images[0].tracks.landmarks)),
        "images_fps": as_images[3], "audio_seconds": audio["waveform"].shape[-1] / audio["sample_rate"],
        "audio_is_the_window": _audio_is_window_of_whole(audio, 4 / 12),
        "audio_rate": audio["sample_rate"], "source_audio_rate": audio_rate,
        "extractor_fps": fp.FantasyPortraitExpressionExtractor.cls.INPUT_TYPES()["optional"]["fps"][1]["default"]}
    for name, kwargs in (("length", {"length": 10}), ("start", {"start_frame": 500}), ("none", {})):
        try:
            tracker(faces, 96, 0, **({"video": VideoFromFile(CLIP)} if name != "none" else {}), **kwargs)
            result[f"tracker_{name}_error"] = None
        except Exception as exc:  # noqa: BLE001
            result[f"tracker_{name}_error"] = str(exc)
    # Output Size with the face models connected: a portrait without a face is refused before sampling
    try:
        fp.FantasyPortraitOutputSize(torch.full((1, 480, 640, 3), 0.5), "480p", faces)
        result["portrait_no_face_error"] = None
    except Exception as exc:  # noqa: BLE001
        result["portrait_no_face_error"] = str(exc)
    man = torch.from_numpy(read_video(os.path.join(SHARED, "media", "man.jpeg")).frames).float() / 255
    result["portrait_with_face_size"] = list(fp.FantasyPortraitOutputSize(man, "480p", faces))
    result["portrait_pixels"] = [man.shape[2], man.shape[1]]

print("RESULT " + json.dumps(result))
