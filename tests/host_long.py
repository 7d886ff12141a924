"""Long videos (FantasyPortrait Long Video) in a real ComfyUI in this process (run by tests/test_in_host.py with the
host's Python): the tiny Wan model, the host's own WanImageToVideo and VAE Decode, and a small stand-in VAE (the
real Wan VAE takes seconds per chunk here; the server test runs the shipped long workflow with it)."""

import os

import numpy as np
import pytest

from comfy_inproc import NodeCall, ksampler
from inproc_fixtures import H  # noqa: F401 (fixture)

FPS = 10.0


class StandInVAE:
    """A Wan-shaped VAE that costs nothing: 8x8 pixels and 4 frames per latent pixel (frame 0 alone), 3 -> 16
    channels by a fixed matrix and back by its pseudo-inverse."""

    def __init__(self, torch):
        self.torch = torch
        g = torch.Generator().manual_seed(5)
        self.up = torch.randn(16, 3, generator=g)
        self.down = torch.linalg.pinv(self.up)

    def encode(self, pixels):
        torch = self.torch
        x = pixels[..., :3].movedim(-1, 0)  # [3, F, H, W]
        x = torch.cat([x[:, :1], x[:, 4::4]], dim=1) if x.shape[1] > 1 else x
        x = torch.nn.functional.avg_pool2d(x, 8)
        return torch.einsum("oc,cthw->othw", self.up, x - 0.5)[None]

    def decode(self, latent):
        torch = self.torch
        x = torch.einsum("co,bothw->bcthw", self.down, latent.float()) + 0.5
        x = torch.cat([x[:, :, :1], x[:, :, 1:].repeat_interleave(4, dim=2)], dim=2)
        x = x.repeat_interleave(8, dim=3).repeat_interleave(8, dim=4)
        return x.movedim(1, -1).clamp(0, 1)  # [B, F, H, W, 3]


@pytest.fixture(scope="module")
def L(H, tmp_path_factory):
    """What a long run needs: text conditioning, a portrait, a stand-in VAE, embeds of 21 frames (4 chunks of 9
    with overlap 5), the node, and a private output folder for the kept chunks."""
    import folder_paths
    import torch

    from fantasyportrait_pack.fantasyportrait_core.branch.embeds import PortraitEmbeds
    from fantasyportrait_pack.fantasyportrait_core.tokens.encoding import encode_features
    from fantasyportrait_pack.nodes import long_run
    from fantasyportrait_pack.nodes.nodes_long import FantasyPortraitLongVideo

    folder_paths.set_output_directory(str(tmp_path_factory.mktemp("output")))
    g = torch.Generator().manual_seed(21)
    features = torch.randn(1, 21, 554, generator=g)
    expression = encode_features(H.adapter.encoder, features)
    positive, negative = [[torch.randn(1, 12, 4096, generator=g), {}]], [[torch.randn(1, 12, 4096, generator=g), {}]]
    rows, cols = torch.linspace(0, 1, 64)[:, None], torch.linspace(0, 1, 80)[None, :]
    portrait = torch.stack([rows.expand(64, 80), cols.expand(64, 80) * 0.5 + 0.2, torch.full((64, 80), 0.6)],
                           dim=-1)[None]
    wave = torch.sin(torch.arange(44100 * 3) / 30.0)[None, None].repeat(1, 2, 1)
    clip = type("ClipOut", (), {"penultimate_hidden_states": torch.randn(1, 257, 1280, generator=g)})()
    return type("Long", (), dict(
        torch=torch, features=features, expression=expression, embeds=PortraitEmbeds(expression, fps=FPS),
        positive=positive, negative=negative, portrait=portrait, vae=StandInVAE(torch), clip=clip,
        audio={"waveform": wave, "sample_rate": 44100}, node=NodeCall(FantasyPortraitLongVideo), run=long_run,
        PortraitEmbeds=PortraitEmbeds))


def long_video(H, L, embeds=None, chunk=9, overlap=5, colour="portrait", seed=3, audio=True, width=80, height=64,
               portrait=None):
    return L.node(model=H.model, adapter=H.adapter, portrait_embeds=embeds or L.embeds, portrait_strength=1.0,
                  start_percent=0.0, end_percent=1.0, positive=L.positive, negative=L.negative, vae=L.vae,
                  start_image=L.portrait if portrait is None else portrait, width=width, height=height, seed=seed,
                  steps=2, cfg=1.0, portrait_cfg=4.0, sampler_name="euler", scheduler="simple", chunk_length=chunk,
                  overlap=overlap, colour_match=colour, fps=FPS, clip_vision_output=L.clip,
                  audio=L.audio if audio else None)


class Recorder:
    """Wraps ``long_run._sample_chunk`` (the decoded frames of every chunk) and WanImageToVideo (the start frames
    each chunk gets) for one run."""

    def __init__(self, L, monkeypatch, fail_at=None):
        from comfy_extras.nodes_wan import WanImageToVideo

        from fantasyportrait_pack.fantasyportrait_core.longvideo import store

        self.frames, self.starts, self.windows, self.saved, self.masks, self.fail_at = [], [], [], [], [], fail_at
        save = store.ChunkStore.save

        def record_save(store_self, index, new_frames, tail, *args, **kwargs):
            self.saved.append((new_frames.copy(), tail.clone()))
            return save(store_self, index, new_frames, tail, *args, **kwargs)

        monkeypatch.setattr(store.ChunkStore, "save", record_save)
        sample, i2v = L.run._sample_chunk, WanImageToVideo.EXECUTE_NORMALIZED.__func__

        def record_sample(chunk, *args, **kwargs):
            if chunk.index == self.fail_at:  # as a cancel does it
                import comfy.model_management

                raise comfy.model_management.InterruptProcessingException()
            out = sample(chunk, *args, **kwargs)
            self.frames.append((chunk, out.clone()))
            return out

        def record_i2v(cls, **kwargs):
            self.starts.append(kwargs["start_image"].clone())
            return i2v(cls, **kwargs)

        from fantasyportrait_pack.nodes import wan_patch

        apply = wan_patch.apply_portrait

        def record_apply(model, adapter, windows, *args, **kwargs):
            self.windows.append(windows.clone())
            self.masks.append(args[3] if len(args) > 3 else kwargs.get("mask"))
            return apply(model, adapter, windows, *args, **kwargs)

        monkeypatch.setattr(L.run, "_sample_chunk", record_sample)
        monkeypatch.setattr(WanImageToVideo, "EXECUTE_NORMALIZED", classmethod(record_i2v))
        monkeypatch.setattr(wan_patch, "apply_portrait", record_apply)


def video_info(path):
    import av

    with av.open(path) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        rate = float(c.streams.video[0].average_rate)
        audio = c.streams.audio[0] if c.streams.audio else None
        audio_s = float(audio.duration * audio.time_base) if audio is not None else None
    return np.stack(frames), rate, audio_s


def test_a_long_clip_becomes_one_video_of_every_frame_with_its_rate_and_audio(H, L, monkeypatch):
    rec = Recorder(L, monkeypatch)
    video, count = long_video(H, L)
    frames, rate, audio_s = video_info(video.get_stream_source())
    assert count == 21 and frames.shape == (21, 64, 80, 3)
    assert rate == FPS and audio_s == pytest.approx(2.1, abs=0.03)  # the audio cut to the 21 frames at 10 fps
    assert [(c.start, c.length, c.known) for c, _ in rec.frames] == [(0, 9, 0), (4, 9, 5), (8, 9, 5), (12, 9, 5)]
    # chunk k's branch got the windows of driver frames [start_k, start_k + 9), encoded on their own
    from fantasyportrait_pack.fantasyportrait_core.tokens.encoding import encode_features

    for (chunk, _), windows in zip(rec.frames, rec.windows):
        alone = encode_features(H.adapter.encoder, L.features[:, chunk.start:chunk.end]).windows
        assert windows.shape == alone.shape and windows.shape[:3] == (1, 3, 97)
        assert float((windows - alone).abs().max()) < 1e-5
    # each later chunk starts from the last 5 frames of the chunk before (after the colour match), exactly
    assert rec.starts[0].shape[0] == 1
    for (_, tail), start in zip(rec.saved, rec.starts[1:]):
        assert start.shape[0] == 5
        assert L.torch.equal(start, tail)
    assert [len(new) for new, _ in rec.saved] == [9, 4, 4, 4]
    # the output: chunk 0's frames, then each later chunk's new frames (H.264, so within its rounding; the frames
    # one latent frame later are far off)
    expect = np.concatenate([new for new, _ in rec.saved]).astype(np.float64)
    error = np.abs(frames.astype(np.float64) - expect).mean()
    shifted = np.abs(frames[4:].astype(np.float64) - expect[:-4]).mean()
    assert error < 6.0 and shifted > 4 * error, (error, shifted)


def test_the_first_chunk_is_the_one_pass_result_bit_for_bit(H, L, monkeypatch):
    from comfy_extras.nodes_wan import WanImageToVideo

    import nodes

    rec = Recorder(L, monkeypatch)
    long_video(H, L, colour="off", audio=False)
    chunk, first = rec.frames[0]
    pos, neg, latent = WanImageToVideo.EXECUTE_NORMALIZED(
        positive=L.positive, negative=L.negative, vae=L.vae, width=80, height=64, length=9, batch_size=1,
        start_image=L.portrait, clip_vision_output=L.clip).result
    sampled = H.fp.FantasyPortraitSampler(H.model, H.adapter, L.PortraitEmbeds(L.expression.frames(0, 9)), 1.0, 0.0,
                                          1.0, pos, neg, latent, 3, 2, 1.0, 4.0, "euler", "simple", 1.0)[0]
    one_pass = nodes.VAEDecode().decode(L.vae, sampled)[0].reshape(-1, 64, 80, 3)
    assert L.torch.equal(first, one_pass)
    assert float(first.std()) > 0.01


def test_several_people_keep_their_own_driver_frames_and_mask_in_every_chunk(H, L, monkeypatch):
    """Two drivers through Multi-Portrait Combine's core: each chunk's windows are both persons' windows of the
    chunk's frames side by side, with the mask of the regions (the same in every chunk)."""
    import numpy as np

    from fantasyportrait_pack.fantasyportrait_core.branch.multi import combine
    from fantasyportrait_pack.fantasyportrait_core.tokens.encoding import encode_features

    torch = L.torch
    other = torch.randn(1, 21, 554, generator=torch.Generator().manual_seed(8))
    drivers = [L.expression, encode_features(H.adapter.encoder, other)]
    boxes = [np.tile([10.0, 10.0, 30.0, 30.0], (21, 1))] * 2
    out = combine(drivers, boxes, np.array([[4.0, 8.0, 36.0, 56.0], [44.0, 8.0, 76.0, 56.0]]), 80, 64)
    embeds = L.PortraitEmbeds(out.expression, fps=FPS, mask=out.mask, query_scale=out.query_scale, size=(80, 64))
    rec = Recorder(L, monkeypatch)
    _, count = long_video(H, L, embeds=embeds, audio=False)
    assert count == 21 and len(rec.windows) == 4
    for (chunk, _), windows, mask in zip(rec.frames, rec.windows, rec.masks):
        for person, features in enumerate((L.features, other)):
            alone = encode_features(H.adapter.encoder, features[:, chunk.start:chunk.end]).windows
            assert float((windows[:, :, 97 * person:97 * (person + 1)] - alone).abs().max()) < 1e-5
        assert mask.shape == (3, 20, 194) and torch.equal(mask, out.mask[:3])
        assert mask[0].any(dim=1).all() and not mask[0].all()  # every token sees someone, not everyone


def test_a_stopped_run_resumes_at_the_first_unfinished_chunk(H, L, monkeypatch):
    full, _ = long_video(H, L, seed=11, audio=False)
    whole = video_info(full.get_stream_source())[0]
    import shutil

    shutil.rmtree(os.path.dirname(full.get_stream_source()))  # forget it, then make it again with a stop
    rec = Recorder(L, monkeypatch, fail_at=2)
    import comfy.model_management

    with pytest.raises(comfy.model_management.InterruptProcessingException):
        long_video(H, L, seed=11, audio=False)
    assert [c.index for c, _ in rec.frames] == [0, 1]
    monkeypatch.undo()
    rec = Recorder(L, monkeypatch)
    again, _ = long_video(H, L, seed=11, audio=False)
    assert [c.index for c, _ in rec.frames] == [2, 3]  # nothing finished is sampled again
    assert np.array_equal(video_info(again.get_stream_source())[0], whole)
    monkeypatch.undo()
    rec = Recorder(L, monkeypatch)
    long_video(H, L, seed=11, audio=False)  # done before: nothing sampled at all
    assert rec.frames == []
    monkeypatch.undo()
    rec = Recorder(L, monkeypatch)
    long_video(H, L, seed=12, audio=False)  # another seed is another run
    assert len(rec.frames) == 4


def test_memory_stays_flat_across_chunks(H, L, monkeypatch):
    """Resident memory after each chunk of an 8-chunk run at 256x256 (each chunk's frames are 26 MB as floats):
    holding every chunk's frames would add that per chunk."""
    import gc

    from fantasyportrait_pack.fantasyportrait_core.longvideo import store

    def rss_mb():
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20

    rss, save = [], store.ChunkStore.save

    def record(self, *args, **kwargs):
        save(self, *args, **kwargs)
        gc.collect()
        rss.append(rss_mb())

    monkeypatch.setattr(store.ChunkStore, "save", record)
    torch = L.torch
    features = torch.randn(1, 8 * 24 + 9, 554, generator=torch.Generator().manual_seed(2))
    from fantasyportrait_pack.fantasyportrait_core.tokens.encoding import encode_features

    embeds = L.PortraitEmbeds(encode_features(H.adapter.encoder, features), fps=FPS)
    big = torch.nn.functional.interpolate(L.portrait.movedim(-1, 1), size=(256, 256)).movedim(1, -1)
    _, count = long_video(H, L, embeds=embeds, chunk=33, overlap=9, width=256, height=256, portrait=big, audio=False)
    assert count == 201 and len(rss) == 8
    # single readings move by +-30 MB (the allocator returns memory late); holding every chunk's frames would put the
    # last three readings 130 MB or more above the first two
    assert min(rss[-3:]) - max(rss[:2]) < 26.0 * 0.5, rss


def test_bad_long_settings_are_refused_with_what_to_change(H, L):
    from inproc_fixtures import error_of

    from fantasyportrait_pack.nodes.nodes_long import FantasyPortraitLongVideo as node

    assert "overlap (9 frames) must be shorter than chunk_length (9)" in node.validate_inputs(9, 9)
    assert "use 81 or 85" in node.validate_inputs(83, 9)
    assert "overlap must be a Wan frame count" in node.validate_inputs(81, 8)
    assert node.validate_inputs(81, 9) is True
    short = L.PortraitEmbeds(L.expression.frames(0, 9), fps=FPS)
    assert "fewer than one chunk (17): lower chunk_length to 9" in error_of(lambda: long_video(H, L, embeds=short,
                                                                                                chunk=17))


def test_the_run_key_sees_a_lora_but_not_whether_it_is_applied_yet(H, L):
    """A model still loaded with its LoRA applied (after a cancelled run) keys the same chunks as before it was
    loaded; the LoRA itself, or another shift, makes another run."""
    import comfy.model_sampling  # noqa: F401 (ModelSamplingSD3 below)
    from comfy_extras.nodes_model_advanced import ModelSamplingSD3

    from fantasyportrait_pack.fantasyportrait_core.longvideo.store import RunKey

    torch = L.torch

    def key(model):
        return RunKey().add(L.run.model_fingerprint(model)).hexdigest()

    weight = "diffusion_model.blocks.0.self_attn.q.weight"
    lora = H.model.clone()
    lora.add_patches({weight: (torch.full_like(H.model.model.state_dict()[weight], 0.01),)}, 1.0)
    before = key(lora)
    import comfy.model_management

    comfy.model_management.load_models_gpu([lora])  # as sampling loads it: the weight now holds the LoRA
    try:
        assert not torch.equal(lora.model.state_dict()[weight], lora.backup[weight].weight)
        assert key(lora) == before
    finally:
        comfy.model_management.unload_all_models()
    shifted = ModelSamplingSD3().patch(H.model, 5.0)[0]
    assert len({key(H.model), before, key(shifted)}) == 3
    # sampling with the shifted clone (ComfyUI puts its schedule into the shared model while it is loaded) changes
    # neither key
    plain = key(H.model)
    ksampler(H, shifted)
    assert key(shifted) == key(ModelSamplingSD3().patch(H.model, 5.0)[0]) and key(H.model) == plain
