"""One long video, chunk after chunk, through ComfyUI's own nodes and the pack's sampler (imported only inside
ComfyUI). Each chunk is what a one-pass graph would do on its frames: WanImageToVideo (the portrait, or the last
``overlap`` frames of the chunk before, as start frames; the portrait's CLIP-vision output every time), Apply +
Guider + the sampler on the driver frames the chunk shows, VAE Decode; then the colour is kept on the portrait's
and the chunk's new frames go to disk. Finished chunks are kept (``fantasyportrait_core.longvideo.store``), so the
same prompt queued again resumes at the first unfinished one."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

import comfy.model_management
import comfy.utils
import folder_paths
import nodes as comfy_nodes
from comfy_extras.nodes_wan import WanImageToVideo

from ..fantasyportrait_core.branch.embeds import PortraitEmbeds
from ..fantasyportrait_core.longvideo.colour import as_uint8, match_colour, reference_stats
from ..fantasyportrait_core.longvideo.plan import Chunk, plan_chunks, sampled_frames
from ..fantasyportrait_core.longvideo.store import ChunkStore, RunKey, remove_stale
from .common import log
from .nodes_sampling import portrait_guider, portrait_model, run_sampler

CHUNK_FOLDER = "fantasyportrait_chunks"  # under ComfyUI's output folder (its temp folder is emptied at start-up)
KEY_VERSION = 1  # bump when what a chunk holds changes, so old chunks are not reused
SAMPLE = 64  # values hashed per weight tensor (with its name, shape and dtype)


@dataclass
class LongSettings:
    """Everything a long run is made of besides the models and conditioning."""

    strength: float
    start_percent: float
    end_percent: float
    width: int
    height: int
    seed: int
    steps: int
    cfg: float
    portrait_cfg: float
    sampler_name: str
    scheduler: str
    chunk_length: int
    overlap: int
    colour_match: bool
    fps: float


def chunk_root() -> str:
    return os.path.join(folder_paths.get_output_directory(), CHUNK_FOLDER)


def _tensor_sample(t) -> list:
    try:
        return [str(t.dtype), tuple(t.shape), t.detach().reshape(-1)[:SAMPLE].float().cpu()]
    except Exception:  # noqa: BLE001 - a quantised tensor type that cannot be sliced: its shape and type only
        return [type(t).__name__, tuple(getattr(t, "shape", ()))]


def _sampled(value, depth: int = 0):
    """Tensors in ``value`` (nested lists, tuples, dicts, and objects' ``weights``) cut to samples; the rest as
    text. For LoRA and other weight patches."""
    if isinstance(value, torch.Tensor):
        return _tensor_sample(value)
    if depth > 4:
        return type(value).__name__
    if isinstance(value, (list, tuple)):
        return [_sampled(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {str(k): _sampled(v, depth + 1) for k, v in value.items()}
    if hasattr(value, "weights"):
        return [type(value).__name__, _sampled(value.weights, depth + 1)]
    return value if isinstance(value, (int, float, str, type(None))) else type(value).__qualname__


def _structure(value, depth: int = 0):
    """The shape of ``model_options`` (other nodes' patches and wrappers): keys and the types of what they hold."""
    if isinstance(value, dict) and depth < 6:
        return {str(k): _structure(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and depth < 6:
        return [_structure(v, depth + 1) for v in value]
    if isinstance(value, (int, float, str, bool, type(None))):
        return value
    return type(value).__qualname__ if not callable(value) else getattr(value, "__qualname__", type(value).__name__)


def model_fingerprint(model) -> list:
    """What identifies a MODEL cheaply: a sample of every weight (name, shape, dtype, the first values; unpatched,
    so a model still loaded with its LoRAs applied from the last run gives the same), its weight patches (LoRAs),
    its noise schedule (ModelSamplingSD3's shift) and the layout of its other patches."""
    backup = getattr(model, "backup", None) or {}  # weights a loaded model holds patched (LoRAs): the originals
    # the diffusion model's own weights: the shared BaseModel also holds the schedule of whichever clone was loaded
    # last (ComfyUI puts a clone's object patches, such as ModelSamplingSD3's, into it while it is loaded); the
    # schedule of this MODEL comes from get_model_object below
    weights = [[name, *_tensor_sample(getattr(backup.get(f"diffusion_model.{name}"), "weight", t))]
               for name, t in model.model.diffusion_model.state_dict().items()]
    patches = {str(k): _sampled(v) for k, v in getattr(model, "patches", {}).items()}
    sampling = model.get_model_object("model_sampling")
    return [type(model.model).__name__, weights, patches, getattr(sampling, "sigmas", None),
            _structure(model.model_options)]


def _conditioning(cond) -> list:
    return [[emb, _sampled(opts)] for emb, opts in cond]


def _clip_vision(output) -> dict | None:
    if output is None:
        return None
    names = ("last_hidden_state", "image_embeds", "penultimate_hidden_states", "mm_projected")
    return {n: getattr(output, n) for n in names if isinstance(getattr(output, n, None), torch.Tensor)}


def run_key(model, adapter, embeds: PortraitEmbeds, positive, negative, vae, portrait, clip_vision, audio,
            settings: LongSettings) -> str:
    vae_model = getattr(vae, "first_stage_model", None)
    vae_sample = ([[n, *_tensor_sample(t)] for n, t in vae_model.state_dict().items()] if vae_model is not None
                  else type(vae).__qualname__)
    adapter_sample = [[n, *_tensor_sample(t)] for n, t in adapter.blocks.weights.items()]  # the K/V projections
    expression = embeds.expression
    key = RunKey().add([KEY_VERSION, model_fingerprint(model), adapter_sample, vae_sample, expression.tokens,
                        expression.num_frames, embeds.mask is not None and embeds.mask[:1], embeds.query_scale,
                        embeds.size, _conditioning(positive), _conditioning(negative), portrait,
                        _clip_vision(clip_vision), audio and [audio["waveform"], audio["sample_rate"]],
                        vars(settings)])
    return key.hexdigest()


def _progress_text(text: str, node_id) -> None:
    log.info("FantasyPortrait long video: %s", text)
    try:
        from server import PromptServer

        if node_id is not None and PromptServer.instance is not None:
            PromptServer.instance.send_progress_text(text, node_id)
    except Exception:  # noqa: BLE001 - no server (in-process use) or an older one: the log has it
        pass


def _sample_chunk(chunk: Chunk, start_image, model, adapter, embeds, positive, negative, vae, clip_vision,
                  s: LongSettings) -> torch.Tensor:
    """One chunk as the one-pass graph makes it: its decoded frames ``[F, H, W, 3]``."""
    pos, neg, latent = WanImageToVideo.EXECUTE_NORMALIZED(
        positive=positive, negative=negative, vae=vae, width=s.width, height=s.height, length=chunk.length,
        batch_size=1, start_image=start_image, clip_vision_output=clip_vision).result
    patched = portrait_model(model, adapter, embeds.frames(chunk.start, chunk.length), s.strength,
                             s.start_percent, s.end_percent)
    guider = portrait_guider(patched, pos, neg, s.cfg, s.portrait_cfg)
    samples = run_sampler(patched, guider, latent, s.seed + chunk.index, s.steps, s.sampler_name, s.scheduler)
    images = comfy_nodes.VAEDecode().decode(vae, samples)[0]
    return images.reshape(-1, *images.shape[-3:])


def run_long(model, adapter, embeds: PortraitEmbeds, positive, negative, vae, portrait, clip_vision, audio,
             s: LongSettings, node_id=None) -> tuple[str, int]:
    """The whole video: (the path of the joined file, its frame count)."""
    chunks = plan_chunks(embeds.expression.num_frames, s.chunk_length, s.overlap)
    total, sampled = sum(c.new_frames for c in chunks), sampled_frames(chunks)
    key = run_key(model, adapter, embeds, positive, negative, vae, portrait, clip_vision, audio, s)
    root = chunk_root()
    for stale in remove_stale(root, keep=key):
        log.info("FantasyPortrait: deleted the chunks of an old long run (%s), unused for a week", stale)
    store = ChunkStore(root, key)
    finished = store.finished_video()
    if finished is not None:
        _progress_text(f"done before: {total} frames in {len(chunks)} chunks ({finished})", node_id)
        return finished, total
    done = store.finished_chunks(len(chunks))
    log.info("FantasyPortrait long video: %d frames in %d chunks of up to %d (overlap %d: %d frames sampled, "
             "%.0f%% more than the output), chunks kept in %s", total, len(chunks), s.chunk_length, s.overlap,
             sampled, 100.0 * (sampled / total - 1), store.dir)
    if done:
        _progress_text(f"resuming at chunk {done + 1} of {len(chunks)} (chunks 1-{done} were finished before)",
                       node_id)
    reference = None
    if s.colour_match:
        resized = comfy.utils.common_upscale(portrait[:1].movedim(-1, 1), s.width, s.height, "bilinear", "center")
        reference = reference_stats(resized.movedim(1, -1))
    tail = store.tail(done - 1) if done else None
    for chunk in chunks[done:]:
        comfy.model_management.throw_exception_if_processing_interrupted()
        _progress_text(f"chunk {chunk.index + 1} of {len(chunks)} (frames {chunk.start}-{chunk.end - 1})", node_id)
        start_image = portrait[:1] if chunk.index == 0 else tail
        frames = _sample_chunk(chunk, start_image, model, adapter, embeds, positive, negative, vae, clip_vision, s)
        if reference is not None:
            frames = match_colour(frames, reference)
        tail = frames[-s.overlap:].float().cpu().clone()
        store.save(chunk.index, as_uint8(frames[chunk.known:]), tail, s.fps,
                   {"start": chunk.start, "length": chunk.length})
        del frames
    _progress_text(f"joining {len(chunks)} chunks ({total} frames)", node_id)
    return store.join(len(chunks), s.fps, audio), total
