"""``fantasyportrait batch`` against two real ComfyUI servers on loopback with the tiny models: a batch of
one- and two-person jobs, resume, bad rows, Ctrl-C, and a server killed mid-batch."""

import csv
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from comfy_servers import ComfyServer, make_base, tiny_sets, two_person_clip
from conftest import ROOT, requires_comfyui
from fantasyportrait_tools.batch import read_manifest
from media import media_path

pytestmark = requires_comfyui



@pytest.fixture(scope="module")
def farm(tmp_path_factory, tiny_models_base):
    tmp = tmp_path_factory.mktemp("farm")
    servers = []
    try:
        for name in ("a", "b"):
            servers.append(ComfyServer(make_base(tmp / name, models_from=tiny_models_base), tmp / f"{name}.log"))
        yield {"tmp": tmp, "servers": servers, "two_clip": two_person_clip(tmp)}
    finally:
        for s in servers:
            if s.proc.poll() is None:
                s.stop()


def jobs_file(path, farm, seeds, steps=2):
    """Four one-person jobs (two clips) and two two-person jobs per six seeds."""
    people = {"image": media_path("two_person.png"), "video": farm["two_clip"], "video2": media_path("jgz.mp4"),
              "size": "96x64", "set": ";".join(tiny_sets("fantasyportrait_people_from_videos"))}
    single = {"image": media_path("man.jpeg"), "size": "64x64", "set": ";".join(tiny_sets("fantasyportrait_single"))}
    rows = []
    for i, seed in enumerate(seeds):
        row = dict(people) if i % 3 == 2 else dict(single, video=media_path("jgz.mp4") if i % 2 else farm["two_clip"])
        rows.append(dict(row, seed=seed, steps=steps))
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, ["image", "video", "video2", "size", "seed", "steps", "set"])
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def batch_cli(farm, jobs, *extra, background=False):
    urls = sum((["--server", s.url] for s in farm["servers"]), [])
    cmd = [sys.executable, "-m", "fantasyportrait_tools", "batch", jobs, *urls, "--timeout", "300", *extra]
    if background:
        return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)


def history(server):
    with urllib.request.urlopen(server.url + "/history", timeout=30) as r:
        return json.load(r)


def queue_ids(server):
    with urllib.request.urlopen(server.url + "/queue", timeout=30) as r:
        data = json.load(r)
    return {item[1] for key in ("queue_running", "queue_pending") for item in data[key]}


def records(path):
    """The manifest's records in file order, read by the batch runner's own reader."""
    return list(read_manifest(str(path)).values())


def test_a_batch_completes_on_both_servers_and_resumes(farm):
    jobs = jobs_file(farm["tmp"] / "jobs.csv", farm, [1, 2, 3, 4, 5, 6])
    proc = batch_cli(farm, jobs)
    assert proc.returncode == 0, proc.stderr[-4000:]
    manifest = farm["tmp"] / "outputs" / "manifest.jsonl"
    got = records(manifest)
    assert [r["status"] for r in got] == ["done"] * 6 and [r["seed"] for r in got] == [1, 2, 3, 4, 5, 6]
    assert {r["server"] for r in got} == {s.url for s in farm["servers"]}  # both servers worked
    from media import read_frames

    for r, row in zip(got, csv.DictReader(open(jobs))):
        video = read_frames(str(farm["tmp"] / "outputs" / r["output"]))
        assert video.shape[:3] == ((9, 64, 96) if row["video2"] else (9, 64, 64))  # 96x64: two people
    # jobs of one clip ran on one server (ComfyUI's cache then skips their tracking)
    servers_per_clip = {}
    for r, row in zip(got, csv.DictReader(open(jobs))):
        servers_per_clip.setdefault((row["video"], row["video2"]), set()).add(r["server"])
    assert all(len(s) == 1 for s in servers_per_clip.values()), servers_per_clip
    # the same command again re-runs nothing
    before = [len(history(s)) for s in farm["servers"]]
    again = batch_cli(farm, jobs)
    assert again.returncode == 0 and "6 of 6 job(s) already done" in again.stderr
    assert [len(history(s)) for s in farm["servers"]] == before


def test_bad_rows_are_all_reported_and_nothing_is_queued(farm):
    path = farm["tmp"] / "bad.csv"
    path.write_text("image,video,seed,steps\n"
                    f"{media_path('man.jpeg')},{media_path('jgz.mp4')},1,2\n"
                    f"missing.png,{media_path('jgz.mp4')},1,2\n"
                    f"{media_path('man.jpeg')},{media_path('jgz.mp4')},minus,2\n")
    before = [len(history(s)) for s in farm["servers"]]
    proc = batch_cli(farm, str(path))
    assert proc.returncode == 2
    assert "line 3: image not found" in proc.stderr and "line 4: seed 'minus' is not an integer" in proc.stderr
    # a model file the servers lack is named, with its folder, before anything is queued
    path.write_text(f"image,video,set\n{media_path('man.jpeg')},{media_path('jgz.mp4')},"
                    "1.unet_name=wan2.1_i2v_720p_14B_bf16.safetensors\n")
    proc = batch_cli(farm, str(path))
    assert proc.returncode == 2 and "put it in ComfyUI/models/diffusion_models/" in proc.stderr
    assert [len(history(s)) for s in farm["servers"]] == before
    assert not any(queue_ids(s) for s in farm["servers"])


def test_ctrl_c_leaves_no_prompt_of_the_batch_in_either_queue(farm):
    jobs = jobs_file(farm["tmp"] / "long.csv", farm, [11, 12, 13, 14, 15, 16], steps=400)
    manifest = farm["tmp"] / "long" / "manifest.jsonl"
    proc = batch_cli(farm, jobs, "--per-server", "3", "--out-dir", str(farm["tmp"] / "long"), "--cancel-running",
                     background=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if manifest.exists() and sum(bool(r["prompt_id"]) for r in records(manifest)) >= 4:
                break
        ours = {r["prompt_id"] for r in records(manifest) if r["prompt_id"]}
        assert len(ours) >= 4 and len(ours & set.union(*(queue_ids(s) for s in farm["servers"]))) >= 4
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:  # a failure above must not leave the batch running against the servers
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err[-3000:]
    for _ in range(60):  # the interrupted prompts end within a step
        if not any(queue_ids(s) & ours for s in farm["servers"]):
            break
        time.sleep(0.5)
    assert not any(queue_ids(s) & ours for s in farm["servers"])
    assert {r["status"] for r in records(manifest)} == {"queued"}  # consistent: nothing left "running"
    assert "stopped: removed" in err and "0/6 done" in err


def test_a_server_killed_mid_batch_loses_no_job(farm):
    jobs = jobs_file(farm["tmp"] / "kill.csv", farm, [21, 22, 23, 24, 25, 26])
    manifest = farm["tmp"] / "kill" / "manifest.jsonl"
    victim = farm["servers"][1]
    killed, finished = {}, threading.Event()

    def watch():
        while not killed and not finished.is_set():
            time.sleep(0.2)
            try:
                running = [r for r in records(manifest) if r["status"] == "running" and r["server"] == victim.url
                           and r["prompt_id"]]
            except (OSError, ValueError):
                continue
            done = [r for r in records(manifest) if r["status"] == "done" and r["server"] == victim.url]
            if running and done:
                victim.kill()
                killed["line"] = running[0]["line"]

    threading.Thread(target=watch, daemon=True).start()
    try:
        proc = batch_cli(farm, jobs, "--out-dir", str(farm["tmp"] / "kill"))
    finally:
        finished.set()
        if killed:  # later tests (or a -k selection) get both servers again
            farm["servers"][1] = ComfyServer(victim.base, victim.log)
    assert killed, "the second server never had a job running after finishing one"
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = records(manifest)
    assert [r["status"] for r in got] == ["done"] * 6
    moved = [r for r in got if r["line"] == killed["line"]][0]
    assert moved["server"] == farm["servers"][0].url  # the job it was running finished on the other server
    assert f"lost   {victim.url}" in proc.stderr
