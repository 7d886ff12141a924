"""Host contracts that newer ComfyUI releases changed under the pack (the README's compatibility table), each
checked in a real ComfyUI in this process (run by tests/test_in_host.py with the host's Python). Where the
host running the test predates a contract, the test builds the newer object the way the newest read source
(cited per test) defines it."""

import inspect
import types

import pytest

from inproc_fixtures import H, faces  # noqa: F401 (fixtures)
from media import media_path, read_frames


# --- VIDEO: trim window and crop -------------------------------------------------------------------------------

def newer_video_class():
    """The host's VideoFromFile if it keeps a trim window and a crop, else a subclass that does, as
    Comfy-Org/ComfyUI 0c6cfff6 ``comfy_api/latest/_input_impl/video_types.py`` does: the raw file plus
    ``start_time``/``duration``/``crop`` (private), ``get_active_trim_window()``, ``get_dimensions()`` of the
    crop, ``as_trimmed``/``as_cropped``, and ``get_stream_source()`` still the whole file."""
    from comfy_api.input_impl import VideoFromFile

    if "crop" in inspect.signature(VideoFromFile.__init__).parameters:
        return VideoFromFile

    class NewerVideoFromFile(VideoFromFile):
        def __init__(self, file, *, start_time=0.0, duration=0.0, crop=None):
            super().__init__(file)
            self._start, self._duration = start_time, duration
            self._VideoFromFile__crop = crop  # where the newer class keeps it (name-mangled self.__crop)

        def get_active_trim_window(self):
            return float(self._start), float(self._duration)

        def get_dimensions(self):
            crop = self._VideoFromFile__crop
            return super().get_dimensions() if crop is None else (crop[2], crop[3])

        def as_trimmed(self, start_time=0, duration=0, strict_duration=True):
            return NewerVideoFromFile(self.get_stream_source(), start_time=self._start + start_time,
                                      duration=duration, crop=self._VideoFromFile__crop)

        def as_cropped(self, x=0, y=0, width=0, height=0):
            return NewerVideoFromFile(self.get_stream_source(), start_time=self._start, duration=self._duration,
                                      crop=(x, y, width, height))

    return NewerVideoFromFile


def test_a_trimmed_and_cropped_video_is_tracked_on_its_window_and_crop(H, faces):
    """jgz.mp4 (15 fps, 512x512, audio) trimmed to 1.0 s + 1.2 s (Trim Video) and cropped to 400x360 at (40, 90)
    (Crop Video): the tracker uses frames 15.. of the file, cropped, exactly as the same pixels given as IMAGE,
    and the audio from 1.0 s on; a window past the clip's end is named."""
    import numpy as np
    import torch

    from fantasyportrait_pack.fantasyportrait_core.video import read_audio

    clip = media_path("jgz.mp4")
    video = newer_video_class()(clip).as_trimmed(1.0, 1.2).as_cropped(40, 90, 400, 360)
    assert video.get_dimensions() == (400, 360)
    tracks, crops, preview, fps, audio = H.fp.FantasyPortraitFaceTracker(faces, 96, 0, video=video, start_frame=2,
                                                                         length=9)
    whole = read_frames(clip)
    pixels = whole[15 + 2:15 + 2 + 9, 90:90 + 360, 40:40 + 400]  # the window's frames 2..10, cropped
    as_images = H.fp.FantasyPortraitFaceTracker(faces, 96, 0, images=torch.from_numpy(pixels).float() / 255)
    assert tracks.tracks.num_frames == 9 and tracks.tracks.frame_size == (360, 400)
    assert np.array_equal(tracks.tracks.landmarks, as_images[0].tracks.landmarks)
    assert np.array_equal(tracks.crops, as_images[0].crops)
    assert torch.equal(preview, as_images[2]) and preview.shape == (9, 360, 400, 3)
    assert fps == 15.0
    full = read_audio(clip, 0.0)
    first = round(17 / 15 * full["sample_rate"])  # the first used frame's time: 1.0 s + 2 frames
    assert audio["sample_rate"] == full["sample_rate"]
    assert audio["waveform"].shape[-1] == round(9 / 15 * full["sample_rate"])
    assert torch.equal(audio["waveform"], full["waveform"][..., first:first + audio["waveform"].shape[-1]])
    with pytest.raises(Exception, match="has no frame in its trim window"):
        H.fp.FantasyPortraitFaceTracker(faces, 96, 0, video=newer_video_class()(clip).as_trimmed(9.0, 1.0))


def test_an_unknown_video_edit_falls_back_to_the_hosts_decode(H, faces):
    """A VIDEO whose reported size differs from what its file streams as (an edit the pack does not know) is
    decoded by the host (get_components) rather than tracked on the wrong pixels."""
    from comfy_api.input_impl import VideoFromFile

    clip = media_path("jgz.mp4")
    calls = []

    class OddEdit(VideoFromFile):
        def get_dimensions(self):
            return (256, 256)

        def get_components(self):
            calls.append(1)
            parts = super().get_components()
            return types.SimpleNamespace(images=parts.images[:, :256, :256], frame_rate=parts.frame_rate,
                                         audio=parts.audio)

    tracks = H.fp.FantasyPortraitFaceTracker(faces, 64, 0, video=OddEdit(clip), length=5)[0]
    assert calls == [1] and tracks.tracks.frame_size == (256, 256) and tracks.tracks.num_frames == 5
    # decoded by the host, it is still retimed as asked (15 -> 5 fps: every third frame)
    _, _, _, rate, audio = H.fp.FantasyPortraitFaceTracker(faces, 64, 0, video=OddEdit(clip), length=5, fps=5.0)
    assert rate == 5.0 and audio["waveform"].shape[-1] == round(5 / 5 * audio["sample_rate"])


def test_a_rotated_clip_is_decoded_by_a_host_that_rotates():
    """A host that keeps edits beside the file also rotates frames by their display rotation (0c6cfff6); the stream
    gives them as stored, so a rotated clip is decoded by that host, not streamed; an older host rotates nothing."""
    from fantasyportrait_pack.nodes.nodes_faces import _streamed

    rotated = types.SimpleNamespace(rotation=90, size=(512, 512))
    newer = types.SimpleNamespace(get_dimensions=lambda: (512, 512), get_active_trim_window=lambda: (0.0, 0.0))
    older = types.SimpleNamespace(get_dimensions=lambda: (512, 512))
    assert not _streamed(newer, rotated) and _streamed(older, rotated)
    assert _streamed(newer, types.SimpleNamespace(rotation=0, size=(512, 512)))


# --- Wan: tokens beside the video, context windows, devices, model patchers ---------------------------------

def _applied(H, expression=None, strength=1.0):
    from fantasyportrait_pack.fantasyportrait_core.branch.embeds import PortraitEmbeds

    portrait = H.portrait if expression is None else PortraitEmbeds(expression)
    return H.fp.FantasyPortraitApply(H.model, H.adapter, portrait, strength, 0.0, 1.0)[0]


def _query(block, x):
    return block.cross_attn.norm_q(block.cross_attn.q(block.norm3(x)))


def test_tokens_after_the_video_grid_get_no_branch_and_the_video_tokens_the_same(H):
    """A block call whose sequence has 20 extra tokens after the 3 x 4 x 5 video grid (newer releases append
    in-context latents there): the branch adds exactly zero to them, and on the video tokens exactly what it adds
    without them."""
    import torch

    from fantasyportrait_pack.nodes import wan_patch

    state = wan_patch.portrait_state(_applied(H))
    dm = H.model.model.diffusion_model
    x = torch.randn(2, 60 + 20, dm.dim, generator=H.g)
    q = _query(dm.blocks[1], x)
    with_extra = wan_patch.prepare_call(state, state.current_run(), 2, x.device, dm, video=slice(0, 60))
    alone = wan_patch.prepare_call(state, state.current_run(), 2, x.device, dm)
    out = with_extra.branch(1, q, state.num_heads)
    assert out.shape == q.shape and torch.count_nonzero(out[:, 60:]) == 0
    assert torch.allclose(out[:, :60], alone.branch(1, q[:, :60], state.num_heads), rtol=0, atol=1e-6)
    assert float(out[:, :60].abs().max()) > 1e-3


def test_frames_concatenated_after_the_video_run_through_the_real_model(H):
    """WanModel's time_dim_concat (frames appended after the video on the time axis, so its token grid has a 4th
    latent frame): the portrait runs, and what it adds at each block's cross_attn.o is zero on that frame's tokens."""
    import torch

    dm = H.model.model.diffusion_model
    patched = _applied(H)  # the transformer options a sampler hands the model: the patches and the wrappers
    topts = {**patched.model_options["transformer_options"], "wrappers": patched.wrappers}
    added = []

    def before(module, inputs):
        added.append(inputs[0].clone())

    def after(module, inputs, output):
        added.append(inputs[0] - added.pop())

    hooks = [h for b in dm.blocks for h in (b.cross_attn.o.register_forward_pre_hook(before),
                                            b.cross_attn.o.register_forward_hook(after))]
    try:
        x = torch.randn(1, 36, 3, 8, 10, generator=H.g)
        out = dm.forward(x, torch.tensor([0.5]), torch.randn(1, 12, 4096, generator=H.g),
                         clip_fea=torch.randn(1, 257, 1280, generator=H.g),
                         time_dim_concat=torch.randn(1, 36, 1, 8, 10, generator=H.g), transformer_options=topts)
    finally:
        for h in hooks:
            h.remove()
    assert out.shape == (1, 16, 3, 8, 10) and bool(torch.isfinite(out).all())
    assert len(added) == len(dm.blocks)
    for delta in added:  # 4 x 4 x 5 tokens: the video's 60, then the concatenated frame's 20
        assert delta.shape[1] == 80 and torch.count_nonzero(delta[:, 60:]) == 0
        assert float(delta[:, :60].abs().max()) > 1e-4


def test_video_tokens_sit_after_a_reference_latent(H):
    """A model with ref_conv puts a reference latent's tokens before the video (Comfy-Org/ComfyUI 0c9a69ae
    forward_orig): the video tokens are then the 4 x 5 reference tokens on."""
    import torch

    from fantasyportrait_pack.nodes.wan_patch import video_tokens

    plain = types.SimpleNamespace(patch_size=(1, 2, 2), ref_conv=None)
    with_ref = types.SimpleNamespace(patch_size=(1, 2, 2), ref_conv=object())
    x = torch.zeros(1, 36, 3, 8, 10)
    ref = {"reference_latent": torch.zeros(1, 36, 8, 10)}
    assert video_tokens(plain, x, ref) == slice(0, 60)
    assert video_tokens(with_ref, x, ref) == slice(20, 80)
    assert video_tokens(with_ref, x, {}) == slice(0, 60)
    assert video_tokens(plain, torch.zeros(1, 36, 3, 7, 9), {}) == slice(0, 60)  # padded to the patch size


def _window_call(H, state, window, frames_in_call, handler=None):
    """The PortraitCall a context window's model call gets, through the pack's OUTER_SAMPLE and DIFFUSION_MODEL
    wrappers, as a sampler with ``handler`` as its context handler calls them."""
    import torch

    from fantasyportrait_pack.nodes import wan_patch

    dm = H.model.model.diffusion_model
    seen = {}

    class Model:
        class_obj = dm

        def __call__(self, x, t, c, clip_fea, tdc, topts, **kw):
            seen["call"] = topts[wan_patch.WRAPPER_KEY]

    class Sampling:
        class_obj = types.SimpleNamespace(model_patcher=H.model, model_options={"context_handler": handler}
                                          if handler is not None else {})

        def __call__(self, noise, latent, *a, **k):
            wan_patch._diffusion_model_wrapper(state)(Model(), torch.zeros(1, 36, frames_in_call, 8, 10),
                                                      torch.zeros(1), torch.zeros(1, 12, 256), None, None,
                                                      {"context_window": window})

    latent = torch.zeros(1, 16, state.latent_frames, 8, 10)
    wan_patch._outer_sample_wrapper(state)(Sampling(), latent, latent)
    return seen["call"]


def test_context_windows_with_an_anchor_and_retained_frames_get_their_token_windows(H):
    """A 21-frame portrait (6 latent frames) sampled with context windows: a window over latent frames [4, 5]
    with the host's causal anchor (3) and the handler's latent_retain_index_list [0] holds global frames
    [0, 4, 5] (the anchor's slot keeps frame 0), so the branch attends to those frames' token windows."""
    import torch

    from fantasyportrait_pack.fantasyportrait_core.tokens.encoding import encode_features
    from fantasyportrait_pack.nodes import wan_patch

    expression = encode_features(H.adapter.encoder, torch.randn(1, 21, 554, generator=H.g))
    state = wan_patch.portrait_state(_applied(H, expression))
    window = types.SimpleNamespace(index_list=[4, 5], causal_anchor_index=3)
    retained = types.SimpleNamespace(latent_retain_index_list=[0])
    assert _window_call(H, state, window, 3).frames == [3, 4, 5]
    call = _window_call(H, state, window, 3, handler=retained)
    assert call.frames == [0, 4, 5]
    assert _window_call(H, state, types.SimpleNamespace(index_list=[1, 2, 3]), 3, handler=retained).frames == [0, 2, 3]
    last = types.SimpleNamespace(latent_retain_index_list=[-1])  # counted from the end, as the host indexes
    assert _window_call(H, state, types.SimpleNamespace(index_list=[1, 2], causal_anchor_index=0), 3,
                        handler=last).frames == [0, 1, 5]
    # the branch of that call equals the branch of a portrait made of exactly those frames' windows
    dm = H.model.model.diffusion_model
    q = _query(dm.blocks[0], torch.randn(1, 60, dm.dim, generator=H.g))
    only = wan_patch.PortraitState(state.projections, expression.windows[:, [0, 4, 5]], None, 1.0, 0.0, 1.0,
                                   state.num_heads)
    direct = wan_patch.prepare_call(only, only.current_run(), 1, q.device, dm)
    assert torch.equal(call.branch(0, q, state.num_heads), direct.branch(0, q, state.num_heads))
    with pytest.raises(Exception, match="covers 3 latent frames but its model call has 4"):
        _window_call(H, state, window, 4)


def test_per_run_tensors_are_held_per_device(H):
    """Cond batches on two devices (cpu and meta here; threads, as newer releases run one per device): each
    device gets and keeps its own copy of the windows, mask and per-token strengths, none is handed to the other
    device, and asking again on a device copies nothing."""
    import threading

    import torch

    from fantasyportrait_pack.nodes import wan_patch

    state = wan_patch.portrait_state(_applied(H))
    state.mask = torch.ones(20, state.windows.shape[2], dtype=torch.bool).expand(3, -1, -1)  # as Combine makes it
    state.query_scale = torch.full((20,), 0.5)
    run = wan_patch.PortraitRun(state, float("inf"), -float("inf"))
    dm = H.model.model.diffusion_model
    calls, barrier = {}, threading.Barrier(2)

    def on(device):
        barrier.wait()
        for _ in range(20):
            calls[device] = wan_patch.prepare_call(state, run, 2, torch.device(device), dm)
            run.windows(torch.device(device), torch.float32)

    threads = [threading.Thread(target=on, args=(d,)) for d in ("cpu", "meta")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for device in ("cpu", "meta"):
        call = calls[device]
        assert call.mask.device.type == device and call.query_scale.device.type == device
        assert run.windows(torch.device(device), torch.float32).device.type == device
    per_device = state.windows.numel() * 4 + state.mask[0].numel() + 20 * 4
    assert run.held_bytes("cpu") == run.held_bytes("meta") == per_device
    first = run.windows(torch.device("meta"), torch.float32)
    assert run.windows(torch.device("meta"), torch.float32) is first  # kept, not copied again
    run.windows(torch.device("meta"), torch.float16)  # another dtype replaces that device's copy
    assert run.held_bytes("meta") == per_device - state.windows.numel() * 2


def test_the_packs_models_use_the_hosts_core_model_patcher(H, monkeypatch):
    """Newer releases load models with CoreModelPatcher (dynamic VRAM) and turn that path off for a whole
    load_models_gpu call when one model in it is a plain ModelPatcher; the adapter's K/V projections (loaded with
    the Wan model), the token encoder and the motion encoder are made with the host's CoreModelPatcher when it has
    one, else with ModelPatcher."""
    import comfy.model_patcher
    import torch

    from fantasyportrait_pack.nodes import managed

    class CoreModelPatcher(comfy.model_patcher.ModelPatcher):
        pass

    expected = getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)
    class Owner:
        pass

    owner = Owner()
    assert type(managed.managed_module(owner, "m", lambda: torch.nn.Identity(), "cpu")) is expected
    monkeypatch.setattr(comfy.model_patcher, "CoreModelPatcher", CoreModelPatcher, raising=False)
    fresh = Owner()
    patcher = managed.managed_module(fresh, "m", lambda: torch.nn.Identity(), "cpu")
    assert type(patcher) is CoreModelPatcher
    assert managed.managed_module(fresh, "m", None, "cpu") is patcher  # one per owner, name and device
    assert managed.managed_module(fresh, "m", None, "meta") is not patcher
    assert managed.managed_module(fresh, "m", None, "meta").model is patcher.model  # the weights are shared


# --- V3: a growing list of drivers where the host has io.Autogrow -----------------------------------------------

def test_multi_combine_grows_its_driver_list_where_the_host_has_autogrow(H, faces, monkeypatch):
    """On this host (no io.Autogrow before 0.3.76) the node has its four fixed driver inputs, as saved workflows
    expect; with an Autogrow (stood in here with the newest read signature, TemplateNames(input, names, min)) it
    also has a group ``more_embeds`` of embeds_5..embeds_16 after them, and a driver there counts as driver 5."""
    import numpy as np
    import torch
    from comfy_api.latest import io

    from fantasyportrait_pack.fantasyportrait_core.faces.tracking import FaceTracks
    from fantasyportrait_pack.fantasyportrait_core.motion.extraction import ExpressionFeatures
    from fantasyportrait_pack.nodes import nodes_embeds

    node = nodes_embeds.FantasyPortraitMultiCombine
    fixed = ["face_models", "image", "width", "height", "embeds_1", "embeds_2", "mapping", "background", "strengths",
             "embeds_3", "embeds_4"]
    if not hasattr(io, "Autogrow"):
        assert [i.id for i in node.define_schema().inputs] == fixed
    made = {}

    class Autogrow:
        class TemplateNames:
            def __init__(self, input, names, min=1):
                made.update(template=input.id, names=names, min=min)

        class Input:
            def __new__(cls, id, template, optional=False, tooltip=None):
                made.update(id=id, optional=optional)
                return io.Custom("COMFY_AUTOGROW_V3").Input(id, optional=optional, tooltip=tooltip)

    monkeypatch.setattr(io, "Autogrow", Autogrow, raising=False)
    assert [i.id for i in node.define_schema().inputs] == fixed + ["more_embeds"]
    assert made == {"template": "embeds", "names": [f"embeds_{i}" for i in range(5, 17)], "min": 0,
                    "id": "more_embeds", "optional": True}
    assert nodes_embeds.driver_list(("a", "b", None, "d"), {"embeds_12": "f", "embeds_5": "e"}) == list("abdef")
    # two faces in the portrait, three drivers (one grown): the node counts the grown one
    tracks = FaceTracks(np.tile(np.array([10, 10, 50, 50], np.float32), (1, 9, 1)), np.zeros((1, 9, 222, 2),
                        np.float32), np.ones((1, 9), bool), (64, 64))
    one = H.fp.FantasyPortraitEncode(H.adapter, ExpressionFeatures(torch.randn(1, 9, 554, generator=H.g), tracks,
                                                                   25.0), 0, 0, "trim", 1.0, 1.0, 1.0)[0]
    image = torch.from_numpy(read_frames(media_path("two_person.png"))[:1]).float() / 255
    with pytest.raises(Exception, match=r"has 2 face\(s\) but 3 driver\(s\) were given"):
        H.fp.FantasyPortraitMultiCombine(faces, image, 96, 64, one, one, "", "all", "", more_embeds={"embeds_5": one})
