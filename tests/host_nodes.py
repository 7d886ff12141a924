"""The nodes in a real ComfyUI in this process (run by tests/test_in_host.py with the host's Python), called as
ComfyUI's executor calls them: the V3 entry point, the sampler against the stock one, the block against the
released formula, Encode, the frame-count checks, the Face Tracker on core's VIDEO, Output Size, Motion Control."""


import numpy as np
import pytest

from comfy_servers import FAMILIES
from inproc_fixtures import H, error_of, faces  # noqa: F401 (fixtures)
from comfy_inproc import apply, block_inputs, call_block_patch, custom, fp_sampler, ksampler, max_diff, rel
from media import media_path, read_frames



@pytest.fixture(scope="module")
def stock(H):
    return ksampler(H, H.model)


def test_the_nodes_come_through_the_v3_entry_point(H):
    """What ComfyUI's loader does with the pack: no V1 mappings, so it calls the V3 entry point, which gives a
    ComfyExtension listing every node as an io.ComfyNode."""
    import asyncio

    from comfy_api.latest import ComfyExtension, io

    extension = asyncio.run(H.pack.comfy_entrypoint())
    node_list = asyncio.run(extension.get_node_list())
    assert sorted(node.GET_SCHEMA().node_id for node in node_list) == sorted(FAMILIES)
    assert isinstance(extension, ComfyExtension) and not hasattr(H.pack, "NODE_CLASS_MAPPINGS")
    assert all(issubclass(node, io.ComfyNode) for node in node_list)


def test_portrait_off_is_exactly_the_stock_sampler(H, stock):
    assert H.torch.equal(fp_sampler(H, H.model, 3.0, 1.0, strength=0.0), stock)
    assert H.torch.equal(fp_sampler(H, H.model, 3.0, 1.0, start=0.99, end=1.0), stock)  # outside start/end percent
    assert H.torch.equal(ksampler(H, H.model), stock)  # the user's MODEL is not modified by the patched clone


def test_portrait_on_changes_the_result(H, stock):
    on = fp_sampler(H, H.model, 3.0, 1.0)
    assert rel(on, stock) > 0.01
    three, two = fp_sampler(H, H.model, 3.0, 4.0), fp_sampler(H, H.model, 1.0, 4.0)
    assert bool(H.torch.isfinite(three).all()) and bool(H.torch.isfinite(two).all())
    assert rel(three, on) > 0.01  # portrait_cfg changes the result
    patched = apply(H, H.model)
    assert max_diff(ksampler(H, patched), on) == 0.0  # Apply + KSampler = the Sampler with portrait_cfg 1
    guider = H.fp.FantasyPortraitGuider(patched, H.positive, H.negative, 3.0, 4.0)[0]
    assert max_diff(custom(guider, H.latent), three) == 0.0  # Apply + Guider via SamplerCustomAdvanced


def test_block_patch_matches_the_released_formula(H):
    """The native block + scale * W_o(x_ad) (no bias) beside the cross-attention output (section 6 of the
    reference doc), to float rounding; a context window's call gets its own latent frames' tokens."""
    import comfy.model_patcher

    from fantasyportrait_pack.fantasyportrait_core.branch.attention import (AdapterProjections,
                                                                           adapter_cross_attention, project_window_kv)

    torch, wan_patch = H.torch, H.wan_patch
    dm = H.model.model.diffusion_model
    block = dm.blocks[1]
    x, e, freqs, ctx = block_inputs(H)
    k, v = project_window_kv(H.expression.windows, H.adapter.blocks[1][0], H.adapter.blocks[1][1])
    scale = 0.8

    def hook(module, args, kwargs, output):
        q = module.norm_q(module.q(args[0]))
        return output + torch.nn.functional.linear(adapter_cross_attention(q, k, v, 2, scale), module.o.weight)

    handle = block.cross_attn.register_forward_hook(hook, with_kwargs=True)
    reference = block(x, e=e, freqs=freqs, context=ctx, context_img_len=257)
    handle.remove()
    projections = comfy.model_patcher.ModelPatcher(AdapterProjections(H.adapter.blocks.weights), "cpu", "cpu")
    state = wan_patch.PortraitState(projections, H.expression.windows, None, scale, 0.0, 1.0, 2)
    ours = call_block_patch(wan_patch.PortraitBlockPatch(1, state), dm, x, e, freqs, ctx)
    assert rel(ours, reference) < 1e-5
    assert rel(reference, block(x, e=e, freqs=freqs, context=ctx, context_img_len=257)) > 1e-2
    # a context window over latent frames [1, 2]: the patch uses those frames' windows only
    sub = wan_patch.PortraitState(projections, H.expression.windows[:, 1:3], None, scale, 0.0, 1.0, 2)
    xs, freqs2 = x[:, 20:], dm.rope_encode(2, 8, 10, device=x.device, dtype=x.dtype)
    assert torch.equal(call_block_patch(wan_patch.PortraitBlockPatch(1, state), dm, xs, e, freqs2, ctx, frames=[1, 2]),
                       call_block_patch(wan_patch.PortraitBlockPatch(1, sub), dm, xs, e, freqs2, ctx))


def _features(H, persons_boxes, frames=17, fps=30.0):
    from fantasyportrait_pack.fantasyportrait_core.faces.tracking import FaceTracks
    from fantasyportrait_pack.fantasyportrait_core.motion.extraction import ExpressionFeatures

    boxes = np.stack([np.tile(np.array(box, np.float32), (frames, 1)) for box in persons_boxes])
    n = len(persons_boxes)
    tracks = FaceTracks(boxes, np.zeros((n, frames, 222, 2), np.float32), np.ones((n, frames), bool), (64, 96))
    return ExpressionFeatures(H.torch.randn(n, frames, 554, generator=H.g), tracks, fps)


def test_encode_node_fits_lengths_and_rates(H):
    encode = H.fp.FantasyPortraitEncode
    features = _features(H, [[10, 10, 50, 50]])
    # 17 frames at 30 fps -> 8 frames at 15 fps -> trimmed to 5 (4k+1); the fps output follows the motion
    embeds, n, rate = encode(H.adapter, features, 0, 0, "trim", 1.0, 1.0, 1.0, fps=15.0)
    assert (n, embeds.fps, list(embeds.driver_boxes.shape), rate) == (5, 15.0, [5, 4], 15.0)
    embeds, n, rate = encode(H.adapter, features, 0, 21, "pad", 1.0, 1.0, 1.0)
    assert (n, rate) == (21, 30.0)
    assert "has 17 frames but 21 were asked for; set frame_fit to pad" in \
        error_of(lambda: encode(H.adapter, features, 0, 21, "trim", 1.0, 1.0, 1.0))
    assert "Person 3 was asked for but the driving clip has 1 person(s)" in \
        error_of(lambda: encode(H.adapter, features, 3, 0, "trim", 1.0, 1.0, 1.0))
    assert "num_frames must be 0 (the whole clip) or 4k+1 frames, as Wan makes them; got 20: use 17 or 21" in \
        error_of(lambda: encode(H.adapter, features, 0, 20, "trim", 1.0, 1.0, 1.0))
    # person -1: the largest face drives (person 1 here); the person widget is not ignored
    two = _features(H, [[0, 0, 20, 20], [30, 0, 70, 40]], fps=25.0)
    largest, second, first = (encode(H.adapter, two, p, 0, "trim", 1.0, 1.0, 1.0)[0].expression.windows
                              for p in (-1, 1, 0))
    assert H.torch.equal(largest, second) and not H.torch.equal(first, second)


def test_frame_count_widgets_are_checked_when_queued(H):
    encode, tracker = H.fp.FantasyPortraitEncode.cls.validate_inputs, H.fp.FantasyPortraitFaceTracker.cls.validate_inputs
    assert encode(num_frames=21) is True and encode(num_frames=0) is True and tracker(length=81) is True
    assert encode(num_frames=None) is True  # a linked value is checked when the node runs
    assert "num_frames must be 0 (the whole clip) or 4k+1 frames, as Wan makes them; got 20: use 17 or 21" in \
        encode(num_frames=20)
    assert encode(num_frames=8001) == "num_frames is 8001, more than its maximum 4097."
    assert "length must be 0 (the whole clip) or 4k+1 frames" in tracker(length=-3)


def test_one_frame_driving_video_is_refused_by_the_nodes(H):
    assert "The driving video has a single frame; a driving clip needs motion" in \
        error_of(lambda: H.fp.FantasyPortraitFaceTracker(None, 96, 0, images=H.torch.zeros(1, 64, 64, 3)))


def test_output_size_node(H):
    torch = H.torch
    assert list(H.fp.FantasyPortraitOutputSize(torch.zeros(1, 1920, 1080, 3), "480p")) == [464, 832]
    assert list(H.fp.FantasyPortraitOutputSize(torch.zeros(1, 1080, 1920, 3), "480p")) == [832, 464]


def test_motion_control_node(H):
    from fantasyportrait_pack.fantasyportrait_core.motion.extraction import ExpressionFeatures

    torch = H.torch
    two = ExpressionFeatures(torch.randn(2, 9, 554, generator=H.g), None, 25.0)
    widgets = {f"{c}_{k}": v for c in ("headpose", "eye", "emo", "mouth") for k, v in
               (("mode", "follow"), ("amount", 1.0), ("smooth", 0.0))}
    same, _ = H.fp.FantasyPortraitMotionControl(two, -1, reference_frame=0, **widgets)
    edited, preview = H.fp.FantasyPortraitMotionControl(two, 1, reference_frame=0,
                                                        **{**widgets, "headpose_mode": "freeze"})
    assert torch.equal(same.features, two.features)
    assert torch.equal(edited.features[0], two.features[0])  # person 0 untouched
    assert bool((edited.features[1, :, :6] == two.features[1, :1, :6]).all())  # person 1's head frozen
    assert list(preview.shape) == [1, 440, 640, 3]  # an IMAGE in 0..1 on a white background
    assert 0.0 <= float(preview.min()) < 0.3 and float(preview.max()) == 1.0


def test_tracker_reads_only_the_used_frames_of_a_core_video(H, faces):
    """jgz.mp4 (15 fps, 59 frames, audio) through the Face Tracker's VIDEO input: retimed to 12 fps, frames 4-12
    used; the same tracks as when those frames come in as IMAGE; audio from 4/12 s for 0.75 s, the clip's own
    samples."""
    import av
    from comfy_api.input_impl import VideoFromFile

    from fantasyportrait_pack.fantasyportrait_core.video import read_audio

    torch, tracker, clip = H.torch, H.fp.FantasyPortraitFaceTracker, media_path("jgz.mp4")
    tracks, crops, preview, rate, audio = tracker(faces, 96, 0, video=VideoFromFile(clip), start_frame=4, length=9,
                                                  fps=12.0)
    whole = read_frames(clip, fps=12.0)  # decoded whole and retimed to 12 fps; frames 4..12 given as IMAGE
    as_images = tracker(faces, 96, 0, images=torch.from_numpy(whole).float() / 255, start_frame=4, length=9)
    assert (tracks.tracks.num_frames, rate, as_images[3]) == (9, 12.0, 25.0)
    assert list(preview.shape) == [9, 512, 512, 3] and list(crops.shape) == [9, 224, 224, 3]
    assert np.array_equal(tracks.tracks.landmarks, as_images[0].tracks.landmarks)
    with av.open(clip) as c:
        assert audio["sample_rate"] == c.streams.audio[0].rate
    assert audio["waveform"].shape[-1] / audio["sample_rate"] == pytest.approx(9 / 12, abs=1e-3)
    full = read_audio(clip, 0.0)["waveform"]
    first = int(round(4 / 12 * audio["sample_rate"]))
    assert torch.equal(audio["waveform"], full[..., first:first + audio["waveform"].shape[-1]])
    assert H.fp.FantasyPortraitExpressionExtractor.cls.INPUT_TYPES()["optional"]["fps"][1]["default"] == 0.0


def test_tracker_takes_a_video_made_from_frames(H, faces):
    """Create Video's kind of VIDEO (frames in memory, 12 fps, a 1 kHz ramp as audio): the same tracks as the
    frames given as IMAGE, its rate, and the audio of frames 4-12 only (samples 333..1082)."""
    from fractions import Fraction

    from comfy_api.input_impl import VideoFromComponents
    from comfy_api.util import VideoComponents

    torch, tracker = H.torch, H.fp.FantasyPortraitFaceTracker
    images = torch.from_numpy(read_frames(media_path("jgz.mp4"), fps=12.0)).float() / 255
    ramp = {"waveform": torch.arange(5000.0).reshape(1, 1, -1), "sample_rate": 1000}
    made = VideoFromComponents(VideoComponents(images=images, frame_rate=Fraction(12), audio=ramp))
    tracks, _, _, rate, audio = tracker(faces, 96, 0, video=made, start_frame=4, length=9)
    as_images = tracker(faces, 96, 0, images=images, start_frame=4, length=9)[0]
    assert np.array_equal(tracks.tracks.landmarks, as_images.tracks.landmarks) and rate == 12.0
    assert audio["waveform"][0, 0, [0, -1]].tolist() == [333.0, 1082.0] and audio["waveform"].shape[-1] == 750


def test_tracker_errors_name_the_widget(H, faces):
    from comfy_api.input_impl import VideoFromFile

    tracker, clip = H.fp.FantasyPortraitFaceTracker, media_path("jgz.mp4")
    assert "length must be 0 (the whole clip) or 4k+1 frames, as Wan makes them; got 10: use 9 or 13" in \
        error_of(lambda: tracker(faces, 96, 0, video=VideoFromFile(clip), length=10))
    assert "start_frame 500 is past the end of the driving video, which has 59 frames at 15 fps" in \
        error_of(lambda: tracker(faces, 96, 0, video=VideoFromFile(clip), start_frame=500))
    assert "Connect the driving clip to the Face Tracker: video (from Load Video) or images" in \
        error_of(lambda: tracker(faces, 96, 0))


def test_output_size_refuses_a_portrait_without_a_face(H, faces):
    from fantasyportrait_pack.fantasyportrait_core.sizing import output_size

    torch = H.torch
    assert "No face was found in the portrait image (640x480)" in \
        error_of(lambda: H.fp.FantasyPortraitOutputSize(torch.full((1, 480, 640, 3), 0.5), "480p", faces))
    man = torch.from_numpy(read_frames(media_path("man.jpeg"))).float() / 255
    assert list(H.fp.FantasyPortraitOutputSize(man, "480p", faces)) == list(output_size(man.shape[2], man.shape[1],
                                                                                         "480p"))


def test_the_packs_models_are_built_from_comfyuis_layers(H):
    """Inside ComfyUI the token encoder and the PD-FGC encoder are made of comfy.ops layers (no random init, as
    ComfyUI's own models; BatchNorm stays torch's) and compute exactly what the torch.nn build computes."""
    import comfy.ops
    import torch

    from checkpoint_factory import adapter_state_dict, flatten
    from motion_weights import motion_state

    from fantasyportrait_pack.fantasyportrait_core.motion.encoder import motion_encoder_from_state_dict
    from fantasyportrait_pack.fantasyportrait_core.tokens.checkpoint import adapter_from_state_dict
    from fantasyportrait_pack.nodes import nodes_loaders

    ops = nodes_loaders.OPERATIONS
    assert ops is comfy.ops.disable_weight_init
    state = flatten(adapter_state_dict(model_dim=256, blocks=2, seed=3))
    ours, plain = adapter_from_state_dict(state, operations=ops), adapter_from_state_dict(state)
    layers = [m for m in ours.encoder.modules() if isinstance(m, (torch.nn.Linear, torch.nn.LayerNorm))]
    assert layers and all(type(m).__module__ == "comfy.ops" for m in layers)
    features = torch.randn(1, 5, 554, generator=H.g)
    with torch.no_grad():
        assert torch.equal(ours.encoder(features), plain.encoder(features))
    weights = motion_state(seed=4)
    enc, ref = motion_encoder_from_state_dict(weights, operations=ops), motion_encoder_from_state_dict(weights)
    convs = [m for m in enc.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert convs and all(type(m).__module__ == "comfy.ops" for m in convs)
    assert all(type(m) is torch.nn.BatchNorm2d for m in enc.modules() if isinstance(m, torch.nn.BatchNorm2d))
    faces = torch.rand(2, 3, 224, 224, generator=H.g) * 2 - 1
    with torch.no_grad():
        assert torch.equal(enc(faces), ref(faces))
