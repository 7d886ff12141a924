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

from comfy_servers import FAMILIES, ComfyServer, make_base, node_ids, shipped_path, tiny_sets, two_person_clip
from conftest import COMFYUI_DIR, ROOT, requires_comfyui
from conftest import COMFYUI_PYTHON as PYTHON
from media import media_path

UI_FILES = glob.glob(os.path.join(ROOT, "example_workflows", "*.json"))

pytestmark = requires_comfyui

NODES = sorted(FAMILIES)


def test_server_lists_every_node(tmp_path):
    front = tmp_path / "frontend"
    front.mkdir()
    server = ComfyServer(make_base(tmp_path / "base", test_nodes=False), tmp_path / "server.log", front)
    try:
        # the template browser lists every shipped UI workflow, and each has its thumbnail
        with urllib.request.urlopen(f"{server.url}/api/workflow_templates", timeout=30) as r:
            templates = json.load(r)["ComfyUI-FantasyPortrait"]
        assert sorted(templates) == sorted(os.path.basename(p)[:-5] for p in UI_FILES)
        for name in templates:
            for ext in ("json", "jpg"):
                with urllib.request.urlopen(f"{server.url}/api/workflow_templates/ComfyUI-FantasyPortrait/{name}.{ext}",
                                            timeout=30) as r:
                    assert r.status == 200 and len(r.read()) > 1000, (name, ext)
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
            assert any(node_ids(wf, name) for wf in SHIPPED), f"{name} is in no shipped workflow"
            assert node["python_module"] == "custom_nodes.ComfyUI-FantasyPortrait"
            inputs = [inp for section in ("required", "optional") for inp in node["input"].get(section, {})]
            for section in ("required", "optional"):  # (hidden inputs, such as a node's own id, have no socket)
                for inp, spec in node["input"].get(section, {}).items():
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


SHIPPED = ("fantasyportrait_single", "fantasyportrait_two_from_one_video", "fantasyportrait_people_from_videos",
           "fantasyportrait_custom_sampling", "fantasyportrait_long", "fantasyportrait_long_people_from_videos",
           "fantasyportrait_fast")
LONG = "fantasyportrait_long"


def shipped(name="fantasyportrait_single", size=(64, 64), length=9, sets=(), chunks=(9, 5)):
    """A shipped API workflow as it is, and the ``--set`` options that point it at the tiny test models:
    file names, a small size instead of Output Size's 480p, a short frame window and 2 steps; ``sets`` adds
    (node class, input, value) items (each class once in the workflow); ``chunks``: a long graph's chunk length and
    overlap."""
    steps = next(c for c in ("FantasyPortraitSampler", "FantasyPortraitLongVideo", "BasicScheduler") if node_ids(name, c))
    items = tiny_sets(name, length) + [f"{steps}.steps=2"]
    if steps == "FantasyPortraitLongVideo":  # short chunks, each after the first from the last frames of the one before
        items += [f"FantasyPortraitLongVideo.chunk_length={chunks[0]}", f"FantasyPortraitLongVideo.overlap={chunks[1]}"]
    for cls in ("WanImageToVideo", "FantasyPortraitMultiCombine", "FantasyPortraitLongVideo"):
        for node_id in node_ids(name, cls):
            items += [f"{node_id}.width={size[0]}", f"{node_id}.height={size[1]}"]
    return shipped_path(name), items + [f"{n}.{k}={v}" for n, k, v in sets]


def run_cli(server, workflow, out, image=None, videos=None, private=False, examples=False):
    """``fantasyportrait run`` on (path, --set items) against the test server, or with no --server (a
    private ComfyUI on the test server's models); ``examples``: with no --image/--video (the pack's examples)."""
    path, sets = workflow
    inputs = [] if examples else ["--image", image or media_path("man.jpeg"),
                                  *sum((["--video", v] for v in videos or [media_path("jgz.mp4")]), [])]
    where = (["--comfyui", COMFYUI_DIR, "--comfyui-python", PYTHON, "--comfyui-arg=--cpu",
              "--comfyui-arg=--disable-api-nodes", "--comfyui-arg=--use-pytorch-cross-attention",
              "--comfyui-arg=--base-directory", f"--comfyui-arg={server['tmp'] / 'base'}"] if private
             else ["--server", server["url"]])
    return subprocess.run([sys.executable, "-m", "fantasyportrait_tools", "run", *where, "--workflow", path,
                           *sum((["--set", item] for item in sets), []), *inputs, "--out", str(out),
                           "--timeout", "300"],
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
    if name in ("fantasyportrait_single", "fantasyportrait_custom_sampling", "fantasyportrait_fast"):  # jgz.mp4: 15 fps
        return dict(image=None, videos=None), ((64, 64), 9, 15.0, True)
    if name == LONG:  # 21 frames of jgz.mp4 in 4 chunks of 9 (overlap 5)
        return dict(image=None, videos=None, length=21), ((64, 64), 21, 15.0, True)
    if name == "fantasyportrait_long_people_from_videos":  # 9 frames of each driver in 2 chunks of 5 (overlap 1)
        clip = two_person_clip(server["tmp"])
        return (dict(image=media_path("two_person.png"), videos=[clip, media_path("jgz.mp4")], chunks=(5, 1)),
                ((96, 64), 9, 25.0, False))
    clip = two_person_clip(server["tmp"])  # 23 fps, no audio; the multi-person graphs retime to 25 fps (released)
    videos = [clip] if name == "fantasyportrait_two_from_one_video" else [clip, media_path("jgz.mp4")]
    return dict(image=media_path("two_person.png"), videos=videos), ((96, 64), 9, 25.0, False)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_workflows_run_against_a_server(server, name):
    inputs, expect = shipped_case(server, name)
    out = server["tmp"] / f"{name}.mp4"
    workflow = shipped(name, size=expect[0], length=inputs.pop("length", 9), chunks=inputs.pop("chunks", (9, 5)))
    proc = run_cli(server, workflow, out, **inputs)
    assert proc.returncode == 0, proc.stderr[-3000:] + server["log"].read_text()[-3000:]
    assert "now takes this value instead of node 24's output 0" in proc.stderr  # the size override is said
    check_video(out, *expect)


def test_run_with_no_inputs_animates_the_packs_examples(server):
    """``fantasyportrait run`` with no --image/--video: the shipped two-driver graph animates the example portrait
    of two people with the two example clips, uploaded under their example names (a user's own portrait.jpg in
    ComfyUI's input folder is never overwritten)."""
    out = server["tmp"] / "examples.mp4"
    proc = run_cli(server, shipped("fantasyportrait_people_from_videos", size=(96, 64)), out, examples=True)
    assert proc.returncode == 0, proc.stderr[-3000:] + server["log"].read_text()[-3000:]
    assert "no --image or --video given: using the pack's example two_people.jpg, driver.mp4, driver_2.mp4 (from " \
           f"{os.path.join(ROOT, 'examples')})" in proc.stderr
    check_video(out, (96, 64), 9, 25.0, False)  # 16 fps clips retimed to 25 fps by the multi-person graph; no audio
    uploaded = server["tmp"] / "base" / "input"
    for name in ("two_people.jpg", "driver.mp4", "driver_2.mp4"):
        assert (uploaded / f"fantasyportrait_example_{name}").read_bytes() == \
            open(os.path.join(ROOT, "examples", name), "rb").read()
    assert not (uploaded / "two_people.jpg").exists()


def test_a_bad_frame_count_is_refused_when_the_prompt_is_queued(server):
    """Encode's num_frames 20 (not 4k+1) through the HTTP API: /prompt refuses the workflow, naming the node and
    the values to use, before any node runs (no face tracking first)."""
    out = server["tmp"] / "bad_count.mp4"
    proc = run_cli(server, shipped(sets=[("FantasyPortraitEncode", "num_frames", 20)]), out)
    assert proc.returncode == 1
    assert "ComfyUI refused the workflow" in proc.stderr
    (encode,) = node_ids("fantasyportrait_single", "FantasyPortraitEncode")
    assert f"node {encode} (FantasyPortraitEncode): Custom validation failed for node num_frames - num_frames must " \
           "be 0 (the whole clip) or 4k+1 frames, as Wan makes them; got 20: use 17 or 21." in proc.stderr
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
                           os.path.join(ROOT, "example_workflows"), os.path.join(ROOT, "workflows", "api")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.endswith("problems: none errors: []")]
    assert len(lines) == len(UI_FILES), proc.stdout


def test_resampled_motion_sets_the_video_fps(server):
    """Encode resamples jgz.mp4's 15 fps motion to 10 fps: the saved video plays at 10 fps (9 frames, 0.9 s).
    The tracker retimes the video itself to 12 fps from frame 5 on: 12 fps, 9 frames, 0.75 s."""
    out = server["tmp"] / "ten_fps.mp4"
    proc = run_cli(server, shipped(sets=[("FantasyPortraitEncode", "fps", 10.0), ("FantasyPortraitFaceTracker", "length", 17),
                                            ("FantasyPortraitEncode", "num_frames", 9)]), out)
    assert proc.returncode == 0, proc.stderr[-3000:] + server["log"].read_text()[-3000:]
    check_video(out, (64, 64), 9, 10.0, True)
    out = server["tmp"] / "twelve_fps.mp4"
    proc = run_cli(server, shipped(sets=[("FantasyPortraitFaceTracker", "fps", 12.0),
                                            ("FantasyPortraitFaceTracker", "start_frame", 5)]), out)
    assert proc.returncode == 0, proc.stderr[-3000:] + server["log"].read_text()[-3000:]
    check_video(out, (64, 64), 9, 12.0, True)


def test_a_shipped_workflow_runs_with_no_server(server):
    """No --server: a private ComfyUI is started on a free port, runs the job and is stopped (one boot, with the
    two-person graph; every shipped graph also runs against the test server above)."""
    name = "fantasyportrait_two_from_one_video"
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
    proc = run_cli(server, shipped(sets=[("FantasyPortraitModelLoader", "model_name", "missing.ckpt")]), out)
    assert proc.returncode == 1
    assert "FantasyPortraitModelLoader" in proc.stderr and "missing.ckpt" in proc.stderr
    assert not out.exists()


def test_cancel_leaves_the_server_healthy(server):
    import threading

    from fantasyportrait_tools.runner import (ComfyClient, RunError, apply_overrides, fill_inputs, load_workflow,
                                             run_workflow)

    client = ComfyClient(server["url"])
    path, sets = shipped(sets=[("FantasyPortraitSampler", "steps", 400)])
    wf = apply_overrides(load_workflow(path), sets)
    wf = fill_inputs(wf, client.upload(media_path("man.jpeg")), [client.upload(media_path("jgz.mp4"))])
    outcome = {}
    seen = threading.Event()
    (sampler,) = node_ids("fantasyportrait_single", "FantasyPortraitSampler")

    def progress(message):
        if message.startswith(f"node {sampler}:"):
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


def test_a_long_run_resumes_after_its_server_is_killed(server, tmp_path):
    """The shipped long workflow on 33 frames (7 chunks of 9, overlap 5) on a server of its own, killed once two
    chunks are finished; the same run on a new server resumes at the first unfinished chunk (the log says which)
    and samples only the chunks left, and the video has every frame."""
    import time

    base = server["tmp"] / "base"
    root = base / "output" / "fantasyportrait_chunks"
    first = ComfyServer(base, tmp_path / "killed.log")
    path, sets = shipped(LONG, length=33)
    proc = subprocess.Popen([sys.executable, "-m", "fantasyportrait_tools", "run", "--server", first.url, "--workflow",
                             path, *sum((["--set", item] for item in sets), []), "--image", media_path("man.jpeg"),
                             "--video", media_path("jgz.mp4"), "--out", str(tmp_path / "never.mp4")], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not glob.glob(str(root / "*" / "chunk_0001.json")):
            time.sleep(0.2)
        assert glob.glob(str(root / "*" / "chunk_0001.json")), first.log.read_text()[-3000:]
    finally:
        first.kill()
        proc.kill()
    (run_dir,) = glob.glob(str(root / "*" / "chunk_0000.mp4"))
    kept = {f: os.path.getmtime(f) for f in glob.glob(os.path.join(os.path.dirname(run_dir), "chunk_*"))}
    finished = len([f for f in kept if f.endswith(".json")])
    assert 2 <= finished < 7
    second = ComfyServer(base, tmp_path / "resumed.log")
    try:
        out = tmp_path / "long.mp4"
        proc = run_cli({**server, "url": second.url}, (path, sets), out)
        log = second.log.read_text()
        assert proc.returncode == 0, proc.stderr[-3000:] + log[-3000:]
    finally:
        second.stop()
    assert f"resuming at chunk {finished + 1} of 7 (chunks 1-{finished} were finished before)" in log, log[-3000:]
    sampled = [int(line.split("chunk ")[1].split(" of")[0]) for line in log.splitlines()
               if "FantasyPortrait long video: chunk " in line]
    assert sampled == list(range(finished + 1, 8))  # nothing finished is sampled again
    check_video(out, (64, 64), 33, 15.0, True)
    assert not any(os.path.exists(f) for f in kept)  # the chunk files are gone once the video is joined


def test_a_cancelled_long_run_stops_and_resumes(server, tmp_path):
    """/interrupt during the shipped long workflow (21 frames, 4 chunks) once its first chunk is finished: the run
    is cancelled, the server keeps serving, and the same prompt again resumes at the first unfinished chunk."""
    import glob
    import threading
    import time

    from fantasyportrait_tools.runner import ComfyClient, RunError, apply_overrides, fill_inputs, load_workflow, run_workflow

    client = ComfyClient(server["url"])
    path, sets = shipped(LONG, length=21, sets=[("FantasyPortraitLongVideo", "seed", 77)])  # a run of its own
    wf = apply_overrides(load_workflow(path), sets)
    wf = fill_inputs(wf, client.upload(media_path("man.jpeg")), [client.upload(media_path("jgz.mp4"))])
    root = server["tmp"] / "base" / "output" / "fantasyportrait_chunks"
    before = set(glob.glob(str(root / "*")))
    outcome = {}

    def target():
        try:
            outcome["entry"] = run_workflow(client, wf, timeout=300)
        except RunError as exc:
            outcome["error"] = str(exc)

    worker = threading.Thread(target=target)
    worker.start()
    deadline = time.time() + 300
    while time.time() < deadline and not [d for d in glob.glob(str(root / "*" / "chunk_0000.json"))
                                          if os.path.dirname(d) not in before]:
        time.sleep(0.1)
    urllib.request.urlopen(urllib.request.Request(server["url"] + "/interrupt", data=b"", method="POST")).read()
    worker.join(120)
    assert "cancelled" in outcome.get("error", ""), outcome
    (run_dir,) = set(glob.glob(str(root / "*"))) - before
    finished = len(glob.glob(os.path.join(run_dir, "chunk_*.json")))
    assert 1 <= finished < 4
    log_start = len(server["log"].read_text())
    out = tmp_path / "after_cancel.mp4"
    proc = run_cli(server, (path, sets), out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = server["log"].read_text()[log_start:]
    assert f"resuming at chunk {finished + 1} of 4" in log, log[-3000:]
    check_video(out, (64, 64), 21, 15.0, True)
