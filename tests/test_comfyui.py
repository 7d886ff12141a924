"""Tests against a real ComfyUI: run when COMFYUI_DIR points at a ComfyUI checkout whose Python
(COMFYUI_PYTHON, default: this interpreter) can import ComfyUI and the pack's dependencies."""

import glob
import json
import os
import shutil
import subprocess
import sys
import urllib.request

import pytest

from comfy_servers import TINY_MODELS, ComfyServer, make_base, two_person_clip
from conftest import COMFYUI_DIR, ROOT, requires_comfyui
from conftest import COMFYUI_PYTHON as PYTHON
from media import media_path

UI_FILES = glob.glob(os.path.join(ROOT, "workflows", "*.json"))

pytestmark = requires_comfyui

FAMILIES = {"FantasyPortraitModelLoader": "loaders", "FantasyPortraitFaceModelLoader": "loaders",
            "FantasyPortraitFaceTracker": "faces", "FantasyPortraitExpressionExtractor": "faces",
            "FantasyPortraitMotionControl": "motion", "FantasyPortraitEncode": "embeds",
            "FantasyPortraitMultiCombine": "embeds", "FantasyPortraitOutputSize": "embeds",
            "FantasyPortraitApply": "sampling", "FantasyPortraitGuider": "sampling", "FantasyPortraitSampler": "sampling"}
NODES = ["FantasyPortraitApply", "FantasyPortraitEncode", "FantasyPortraitExpressionExtractor",
         "FantasyPortraitFaceModelLoader", "FantasyPortraitFaceTracker", "FantasyPortraitGuider",
         "FantasyPortraitModelLoader", "FantasyPortraitMotionControl", "FantasyPortraitMultiCombine",
         "FantasyPortraitOutputSize", "FantasyPortraitSampler"]


def _check(script, timeout=900):
    """Run a host-check script in the real ComfyUI's Python; returns the JSON object it prints."""
    proc = subprocess.run([PYTHON, os.path.join(ROOT, "tests", script), COMFYUI_DIR, ROOT],
                          capture_output=True, text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


@pytest.fixture(scope="module")
def host_result():
    return _check("comfy_host_check.py")


def test_the_nodes_come_through_the_v3_entry_point(host_result):
    assert host_result["nodes"] == NODES
    # a ComfyExtension, no NODE_CLASS_MAPPINGS beside it (ComfyUI would read that instead), io.ComfyNode classes
    assert host_result["entrypoint"] == [True, True, True]


def test_portrait_off_is_exactly_the_stock_sampler(host_result):
    assert host_result["off_equals_stock"]
    assert host_result["inactive_window_equals_stock"]  # start/end percent outside the schedule
    assert host_result["model_untouched"]  # the user's MODEL is not modified by the patched clone


def test_portrait_on_changes_the_result(host_result):
    assert host_result["on_rel_diff"] > 0.01
    assert host_result["three_pass_finite"] and host_result["two_pass_finite"]
    assert host_result["three_pass_rel_diff"] > 0.01  # portrait_cfg changes the result
    assert host_result["apply_plus_ksampler_equals_sampler_pcfg1"] == 0.0
    assert host_result["guider_equals_sampler"] == 0.0  # Apply + Guider via SamplerCustomAdvanced


def test_encode_node_fits_lengths_and_rates(host_result):
    # 17 frames at 30 fps -> 8 frames at 15 fps -> trimmed to 5 (4k+1)
    assert host_result["encode_resampled_frames"] == [5, 15.0, [5, 4], 15.0]  # the fps output follows the motion
    assert host_result["encode_source_fps"] == 30.0
    assert host_result["encode_padded_frames"] == 21
    assert "has 17 frames but 21 were asked for; set frame_fit to pad" in host_result["encode_short_error"]
    assert "Person 3 was asked for but the driving clip has 1 person(s)" in host_result["encode_person_error"]
    assert "num_frames must be 0 (the whole clip) or 4k+1 frames, as Wan makes them; got 20: use 17 or 21" in \
        host_result["encode_count_error"]
    assert host_result["encode_largest_is_person_1"]  # person -1: the largest face (released rule)
    assert host_result["encode_person_0_differs"]


def test_frame_count_widgets_are_checked_when_queued(host_result):
    ok, whole, twenty, huge, linked, released, negative = host_result["validate_counts"]
    assert ok is True and whole is True and linked is True and released is True
    assert "num_frames must be 0 (the whole clip) or 4k+1 frames, as Wan makes them; got 20: use 17 or 21" in twenty
    assert huge == "num_frames is 8001, more than its maximum 4097."
    assert "length must be 0 (the whole clip) or 4k+1 frames" in negative


def test_one_frame_driving_video_is_refused_by_the_nodes(host_result):
    assert "The driving video has a single frame; a driving clip needs motion" in host_result["tracker_one_frame_error"]


def test_tracker_reads_only_the_used_frames_of_a_core_video(host_result):
    """jgz.mp4 (15 fps, 59 frames, audio) through the Face Tracker's VIDEO input: retimed to 12 fps, frames
    4-12 used; the same tracks as when those frames come in as IMAGE; audio from 4/12 s for 0.75 s."""
    got = host_result.get("tracker_video")
    if got is None:
        pytest.skip("real face models or test media not found")
    assert (got["frames"], got["fps"], got["images_fps"]) == (9, 12.0, 25.0)
    assert got["preview"] == [9, 512, 512, 3] and got["crops"] == [9, 224, 224, 3]
    assert got["same_as_images"]
    # Create Video's kind of VIDEO (frames in memory, 12 fps, a 1 kHz ramp as audio): the same tracks, its rate,
    # and the audio of frames 4-12 only (samples 333..1082)
    assert host_result["tracker_components"] == [True, 12.0, [333.0, 1082.0], 750]
    assert got["audio_seconds"] == pytest.approx(9 / 12, abs=1e-3) and got["audio_rate"] == got["source_audio_rate"]
    assert got["audio_is_the_window"]  # the clip's own samples from 4/12 s on
    assert got["extractor_fps"] == 0.0  # 0: the fps comes with the tracks
    assert "length must be 0 (the whole clip) or 4k+1 frames, as Wan makes them; got 10: use 9 or 13" in \
        host_result["tracker_length_error"]
    assert "start_frame 500 is past the end of the driving video, which has 59 frames at 15 fps" in \
        host_result["tracker_start_error"]
    assert "Connect the driving clip to the Face Tracker: video (from Load Video) or images" in \
        host_result["tracker_none_error"]


def test_portrait_without_a_face_is_refused(host_result):
    if "portrait_no_face_error" not in host_result:
        pytest.skip("real face models or test media not found")
    assert "No face was found in the portrait image (640x480)" in host_result["portrait_no_face_error"]
    from fantasyportrait_core.sizing import output_size

    assert host_result["portrait_with_face_size"] == list(output_size(*host_result["portrait_pixels"], "480p"))


def test_output_size_node(host_result):
    assert host_result["output_size_portrait"] == [464, 832] and host_result["output_size_landscape"] == [832, 464]


def test_motion_control_node(host_result):
    assert host_result["motion_default_identical"]
    assert host_result["motion_person0_untouched"] and host_result["motion_person1_head_frozen"]
    shape, low, high = host_result["motion_preview"]  # an IMAGE: [1, H, W, 3] in 0..1, white background
    assert shape == [1, 440, 640, 3] and 0.0 <= low < 0.3 and high == 1.0


def test_block_patch_matches_the_released_formula(host_result):
    # native block + scale * W_o(x_ad) beside the cross-attention output, to float rounding
    assert host_result["block_rel_diff"] < 1e-5
    assert host_result["block_branch_rel_effect"] > 1e-2
    assert host_result["context_window_equal"]  # context windows get their own latent frames' tokens


@pytest.fixture(scope="module")
def patch_result():
    return _check("comfy_patch_check.py")


def test_applying_again_replaces_the_portrait(patch_result):
    assert patch_result["portrait_effect"] > 0.01
    assert patch_result["apply_then_sampler_diff"] == 0.0  # Apply -> Sampler == Sampler on the plain model
    assert patch_result["apply_twice_diff"] == 0.0  # the second Apply wins, the first is gone


def test_clones_share_the_adapter_and_its_state(patch_result):
    assert patch_result["clones_share_state"]
    shared, per_model = patch_result["clone_projection_storages"]
    assert shared == per_model == 4  # 10 clones, still one k and one v tensor per block of the 2-block adapter
    assert patch_result["clone_equals_original"] == 0.0


def test_embeds_and_mask_are_checked_against_the_latent_on_every_path(patch_result):
    for path in ("ksampler", "sampler", "guider"):
        message = patch_result[f"length_error_{path}"]
        assert "cover 9 frames (3 latent frames)" in message and "6 latent frames (21 frames)" in message, message
        assert "WanImageToVideo's length to 9" in message
    assert "made for 64x80" in patch_result["grid_error"] and "80x64" in patch_result["grid_error"]
    assert patch_result["grid_ok"] is None


def test_the_hosts_own_block_runs_with_the_portrait(patch_result):
    assert patch_result["wrapped_block_forward_kept"] < 1e-6  # a wrapped WanAttentionBlock.forward still acts
    assert patch_result["inner_hook_effect"] > 1e-3  # a hook inside the block still acts
    assert patch_result["hooks_removed_after_call"]


def test_only_wan_i2v_models_are_accepted(patch_result):
    assert "text-to-video" in patch_result["t2v_error"] and "16 input channels" in patch_result["t2v_error"]
    assert patch_result["wan22_apply_error"] is None
    assert "not Wan 2.1 I2V 14B" in patch_result["wan22_warning"] and "Wan 2.2" in patch_result["wan22_warning"]
    assert "needs a Wan 2.1 I2V 14B model" in patch_result["non_wan_error"]


def test_guidance_formulas_against_separate_model_calls(patch_result):
    assert patch_result["three_pass_formula"] < 1e-5
    assert patch_result["two_pass_formula"] < 1e-5
    assert patch_result["portrait_guidance_effect"] > 1e-2  # not the same as plain CFG
    assert patch_result["pcfg_below_one_equals_plain_cfg"] < 1e-6
    assert patch_result["setup_order_diff"] == 0.0
    assert "carries no portrait" in patch_result["guider_without_portrait_error"]


def test_other_guidance_patches_still_apply(patch_result):
    assert patch_result["post_cfg_effect_3"] > 0.05 and patch_result["post_cfg_effect_1"] > 0.05
    assert patch_result["post_cfg_scales_seen"] == [3.0, 4.0]  # text scale (3 passes), portrait scale (2 passes)
    assert patch_result["rescale_cfg_effect"] > 1e-3


def test_percent_window_follows_the_model_sampling_at_sampling_time(patch_result):
    assert patch_result["percent_after_shift_diff"] == 0.0
    assert patch_result["percent_window_effect"] > 1e-3


def test_non_finite_numbers_are_refused(patch_result):
    assert "portrait_strength is nan" in patch_result["nan_strength_error"]
    assert "portrait_cfg is inf" in patch_result["nan_pcfg_error"]


def test_memory_held_between_block_calls_and_model_management(patch_result):
    # between block calls only the token windows stay on the device (no per-block K/V)
    assert patch_result["held_bytes"] == [patch_result["windows_bytes"]] * 3
    assert patch_result["projections_loaded_during_run"]  # the K/V weights are declared to ComfyUI
    assert patch_result["run_cleared_after"]
    assert patch_result["encoder_managed"] and patch_result["encoder_freed"]
    assert patch_result["encoder_dtype"] == "torch.float32"


def test_a_cancelled_run_frees_its_per_run_tensors(patch_result):
    # cancelled at the first step, while the run held its windows: nothing of the run is kept afterwards
    assert patch_result["cancel_raised"] and patch_result["held_when_cancelled"] == patch_result["windows_bytes"]
    assert patch_result["run_cleared_after_cancel"]


def test_context_window_calls_get_their_frames_with_the_anchor(patch_result):
    assert patch_result["anchored_window_frames"] == [1, 2]
    assert "covers 2 latent frames but its model call has 3" in patch_result["window_mismatch_error"]


def test_server_lists_every_node(tmp_path):
    front = tmp_path / "frontend"
    front.mkdir()
    server = ComfyServer(make_base(tmp_path / "base", test_nodes=False), tmp_path / "server.log", front)
    try:
        with open(os.path.join(COMFYUI_DIR, "comfyui_version.py")) as fh:  # the log names the release as tested
            version = fh.read().split('"')[1]
        assert f"FantasyPortrait: ComfyUI {version}, a release the pack is tested on" in server.log.read_text()
        with urllib.request.urlopen(f"{server.url}/object_info", timeout=30) as r:
            info = json.load(r)
        sys.path.insert(0, os.path.join(ROOT, "workflows"))
        import build_workflows

        for name in NODES:
            assert name in info, name
            if name in build_workflows.NODE_DEFS:  # the workflow builder's table matches the real nodes
                ins, outs = build_workflows.NODE_DEFS[name]
                order = info[name]["input_order"]
                assert order["required"] + order.get("optional", []) == [n for n, _, _ in ins]
                assert order.get("optional", []) == [n for n, _, _ in ins if (name, n) in build_workflows.OPTIONAL]
                assert info[name]["output"] == [t for _, t in outs]
                assert info[name]["output_name"] == [n for n, _ in outs]  # saved links keep their slot names
            node = info[name]
            assert node["category"] == f"FantasyPortrait/{FAMILIES[name]}", name  # categories by family
            assert node["python_module"] == "custom_nodes.ComfyUI-FantasyPortrait"
            inputs = [inp for section in ("required", "optional") for inp in node["input"].get(section, {})]
            for section in node["input"].values():
                for inp, spec in section.items():
                    assert len(spec) > 1 and spec[1].get("tooltip"), f"{name}.{inp} has no tooltip"
            assert all(node["output_tooltips"]), f"{name} has an output without a tooltip"
            # the node docs panel (frontend 1.27) asks for /extensions/<pack folder>/docs/<id>/<locale>.md, then
            # /extensions/<pack folder>/docs/<id>.md: served, titled, naming every socket
            with urllib.request.urlopen(f"{server.url}/extensions/ComfyUI-FantasyPortrait/docs/{name}.md",
                                        timeout=30) as r:
                doc = r.read().decode()
            assert doc.startswith(f"# {node['display_name']}\n"), name
            for socket in inputs + node["output_name"]:
                assert f"**{socket}**" in doc, f"docs/{name}.md does not explain {socket}"
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------
# end to end through the HTTP API and `fantasyportrait run`



@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_models_base):
    tmp = tmp_path_factory.mktemp("comfy")
    front = tmp / "frontend"
    front.mkdir()
    has_frontend = subprocess.run([PYTHON, "-c", "import comfyui_frontend_package"], capture_output=True).returncode == 0
    comfy = ComfyServer(make_base(tmp / "base", models_from=tiny_models_base), tmp / "server.log",
                        None if has_frontend else front)
    try:
        yield {"url": comfy.url, "tmp": tmp, "log": comfy.log}
    finally:
        comfy.stop()


SHIPPED = ("fantasyportrait_single", "fantasyportrait_two_from_one_video", "fantasyportrait_people_from_videos")


def shipped(name="fantasyportrait_single", size=(64, 64), length=9, sets=()):
    """A shipped API workflow as it is, and the ``--set`` options that point it at the tiny test models:
    file names, a small size instead of Output Size's 480p, a short frame window and 2 steps."""
    path = os.path.join(ROOT, "workflows", "api", f"{name}_api.json")
    with open(path) as fh:
        wf = json.load(fh)
    items = TINY_MODELS + ["19.steps=2"]
    for node_id, node in wf.items():
        if node["class_type"] in ("WanImageToVideo", "FantasyPortraitMultiCombine"):
            items += [f"{node_id}.width={size[0]}", f"{node_id}.height={size[1]}"]
        if node["class_type"] == "FantasyPortraitFaceTracker":
            items.append(f"{node_id}.length={length}")
    return path, items + [f"{n}.{k}={v}" for n, k, v in sets]


def run_cli(server, workflow, out, image=None, videos=None, private=False):
    """``fantasyportrait run`` on (path, --set items) against the test server, or with no --server (a
    private ComfyUI on the test server's models)."""
    path, sets = workflow
    videos = videos or [media_path("jgz.mp4")]
    where = (["--comfyui", COMFYUI_DIR, "--comfyui-python", PYTHON, "--comfyui-arg=--cpu",
              "--comfyui-arg=--disable-api-nodes", "--comfyui-arg=--use-pytorch-cross-attention",
              "--comfyui-arg=--base-directory", f"--comfyui-arg={server['tmp'] / 'base'}"] if private
             else ["--server", server["url"]])
    return subprocess.run([sys.executable, "-m", "fantasyportrait_core", "run", *where, "--workflow", path,
                           *sum((["--set", item] for item in sets), []),
                           "--image", image or media_path("man.jpeg"),
                           *sum((["--video", v] for v in videos), []), "--out", str(out), "--timeout", "300"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def check_video(path, size, frames, fps, audio):
    """The saved file: size, frame count, frame rate, duration, and whether it has the driving audio."""
    import av

    with av.open(str(path)) as container:
        video = container.streams.video[0]
        assert (video.codec_context.width, video.codec_context.height) == size
        assert float(video.average_rate) == pytest.approx(fps)
        assert bool(container.streams.audio) == audio
        count = sum(1 for _ in container.decode(video))
        duration = float(video.duration * video.time_base) if video.duration else None
    assert count == frames
    if duration is not None:
        assert duration == pytest.approx(frames / fps, abs=1.5 / fps)


def shipped_case(server, name):
    """Per shipped workflow: the inputs it is run with, and what its saved video must be."""
    if name == "fantasyportrait_single":  # jgz.mp4: 15 fps with audio; the single graph keeps the clip's rate
        return dict(image=None, videos=None), ((64, 64), 9, 15.0, True)
    clip = two_person_clip(server["tmp"])  # 23 fps, no audio; the multi-person graphs retime to 25 fps (released)
    videos = [clip] if name == "fantasyportrait_two_from_one_video" else [clip, media_path("jgz.mp4")]
    return dict(image=media_path("two_person.png"), videos=videos), ((96, 64), 9, 25.0, False)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_workflows_run_against_a_server(server, name):
    inputs, expect = shipped_case(server, name)
    out = server["tmp"] / f"{name}.mp4"
    proc = run_cli(server, shipped(name, size=expect[0]), out, **inputs)
    assert proc.returncode == 0, proc.stderr[-3000:] + server["log"].read_text()[-3000:]
    assert "now takes this value instead of node 24's output 0" in proc.stderr  # the size override is said
    check_video(out, *expect)


def test_a_bad_frame_count_is_refused_when_the_prompt_is_queued(server):
    """Encode's num_frames 20 (not 4k+1) through the HTTP API: /prompt refuses the workflow, naming the node and
    the values to use, before any node runs (no face tracking first)."""
    out = server["tmp"] / "bad_count.mp4"
    proc = run_cli(server, shipped(sets=[("17", "num_frames", 20)]), out)
    assert proc.returncode == 1
    assert "ComfyUI refused the workflow" in proc.stderr
    assert "node 17 (FantasyPortraitEncode): Custom validation failed for node num_frames - num_frames must be 0 " \
           "(the whole clip) or 4k+1 frames, as Wan makes them; got 20: use 17 or 21." in proc.stderr
    assert not out.exists()


def test_ui_workflows_load_in_the_real_frontend(server):
    """Drag-and-drop check: every UI workflow loads in ComfyUI's frontend with all node types known and
    the same widget values and links as its API twin (needs Chromium, Playwright and the frontend package
    in ComfyUI's Python)."""
    chromium = shutil.which("chromium")
    probe = subprocess.run([PYTHON, "-c", "import playwright, comfyui_frontend_package"], capture_output=True)
    if not chromium or probe.returncode:
        pytest.skip("needs /usr/bin/chromium and playwright + comfyui-frontend-package in COMFYUI_PYTHON")
    proc = subprocess.run([PYTHON, os.path.join(ROOT, "tests", "comfy_ui_check.py"), server["url"],
                           os.path.join(ROOT, "workflows")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.endswith("problems: none errors: []")]
    assert len(lines) == len(UI_FILES), proc.stdout


def test_resampled_motion_sets_the_video_fps(server):
    """Encode resamples jgz.mp4's 15 fps motion to 10 fps: the saved video plays at 10 fps (9 frames, 0.9 s).
    The tracker retimes the video itself to 12 fps from frame 5 on: 12 fps, 9 frames, 0.75 s."""
    out = server["tmp"] / "ten_fps.mp4"
    proc = run_cli(server, shipped(sets=[("17", "fps", 10.0), ("13", "length", 17), ("17", "num_frames", 9)]), out)
    assert proc.returncode == 0, proc.stderr[-3000:] + server["log"].read_text()[-3000:]
    check_video(out, (64, 64), 9, 10.0, True)
    out = server["tmp"] / "twelve_fps.mp4"
    proc = run_cli(server, shipped(sets=[("13", "fps", 12.0), ("13", "start_frame", 5)]), out)
    assert proc.returncode == 0, proc.stderr[-3000:] + server["log"].read_text()[-3000:]
    check_video(out, (64, 64), 9, 12.0, True)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_workflows_run_with_no_server(server, name):
    """No --server: a private ComfyUI is started on a free port, runs the job and is stopped."""
    inputs, expect = shipped_case(server, name)
    out = server["tmp"] / f"private_{name}.mp4"
    proc = run_cli(server, shipped(name, size=expect[0]), out, private=True, **inputs)
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_video(out, *expect)
    started = [line for line in proc.stderr.splitlines() if line.startswith("starting ComfyUI from")]
    url = started[0].split(" on ")[1].split(" ")[0]
    assert "stopped the private ComfyUI" in proc.stderr
    with pytest.raises(OSError):  # nothing listens there any more
        urllib.request.urlopen(url + "/system_stats", timeout=5)


def test_failed_run_reports_the_node_error(server):
    out = server["tmp"] / "never.mp4"
    proc = run_cli(server, shipped(sets=[("16", "model_name", "missing.ckpt")]), out)
    assert proc.returncode == 1
    assert "FantasyPortraitModelLoader" in proc.stderr and "missing.ckpt" in proc.stderr
    assert not out.exists()


def test_cancel_leaves_the_server_healthy(server):
    import threading

    from fantasyportrait_core.tools.runner import (ComfyClient, RunError, apply_overrides, fill_inputs, load_workflow,
                                             run_workflow)

    client = ComfyClient(server["url"])
    path, sets = shipped(sets=[("19", "steps", 400)])
    wf = apply_overrides(load_workflow(path), sets)
    wf = fill_inputs(wf, client.upload(media_path("man.jpeg")), [client.upload(media_path("jgz.mp4"))])
    outcome = {}
    seen = threading.Event()

    def progress(message):
        if message.startswith("node 19:"):
            seen.set()

    def target():
        try:
            outcome["entry"] = run_workflow(client, wf, progress, timeout=300)
        except RunError as exc:
            outcome["error"] = str(exc)

    worker = threading.Thread(target=target)
    worker.start()
    assert seen.wait(120), "sampling never started"
    urllib.request.urlopen(urllib.request.Request(server["url"] + "/interrupt", data=b"", method="POST")).read()
    worker.join(120)
    assert "cancelled" in outcome.get("error", ""), outcome
    out = server["tmp"] / "after_cancel.mp4"
    proc = run_cli(server, shipped(), out)
    assert proc.returncode == 0 and out.stat().st_size > 0, proc.stderr[-2000:]
