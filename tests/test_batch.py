"""``fantasyportrait batch``: jobs file validation, scheduling, the manifest, resume, failures and Ctrl-C,
against in-process fake ComfyUI servers (tests/fake_comfy.py). The same runs against real ComfyUI servers
are in test_batch_comfyui.py."""

import csv
import json
import os
import threading
import time

import pytest

from conftest import ROOT
from fake_comfy import FakeComfy
from fantasyportrait_tools.batch import load_jobs, parse_servers, read_manifest, run_batch
from fantasyportrait_tools.cli import main
from fantasyportrait_tools.workflow import MODEL_FOLDERS

SINGLE = os.path.join(ROOT, "workflows", "api", "fantasyportrait_single_api.json")
PEOPLE = os.path.join(ROOT, "workflows", "api", "fantasyportrait_people_from_videos_api.json")


def object_info():
    """/object_info for the shipped workflows: every node type, model inputs listing the shipped files."""
    info = {}
    for path in (SINGLE, PEOPLE):
        for node in json.load(open(path)).values():
            spec = info.setdefault(node["class_type"], {"input": {"required": {}}})["input"]["required"]
            for name, value in node["inputs"].items():
                if name in MODEL_FOLDERS and isinstance(value, str):
                    spec.setdefault(name, [[], {}])[0].append(value)
                else:
                    spec.setdefault(name, ["*", {}])
    return info


@pytest.fixture
def media(tmp_path):
    for name in ("a.png", "b.png", "clip1.mp4", "clip2.mp4", "clip3.mp4"):
        (tmp_path / name).write_bytes(name.encode() * 50)
    return tmp_path


@pytest.fixture
def servers():
    made = []

    def make(count=2, **kw):
        made.extend(FakeComfy(object_info(), **kw) for _ in range(count))
        return made[-count:]
    yield make
    for s in made:
        if s.alive:
            s.kill()


def write_jobs(path, rows, fmt="csv"):
    if fmt == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    else:
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, sorted({k for r in rows for k in r}))
            writer.writeheader()
            writer.writerows(rows)
    return str(path)


def batch(jobs, fakes, **kw):
    said = []
    code = run_batch(jobs, [(f.url, kw.pop("headers", {})) for f in fakes], say=said.append, **kw)
    return code, "\n".join(said)


def batch_watched(jobs, fakes, step):
    """``batch`` while ``step()`` is called every 5 ms on a thread, until it returns True or the batch ends."""
    finished = threading.Event()

    def loop():
        while not finished.is_set() and not step():
            time.sleep(0.005)

    threading.Thread(target=loop, daemon=True).start()
    try:
        return batch(jobs, fakes)
    finally:
        finished.set()


def manifest(path):
    """The manifest's records in file order, read by the batch runner's own reader."""
    return list(read_manifest(str(path)).values())


SIX = [{"image": "a.png", "video": "clip1.mp4", "seed": 1}, {"image": "b.png", "video": "clip2.mp4", "seed": 2},
       {"image": "b.png", "video": "clip1.mp4", "seed": 3}, {"image": "a.png", "video": "clip2.mp4", "seed": 4},
       {"image": "a.png", "video": "clip1.mp4", "seed": 5, "steps": 20},
       {"image": "b.png", "video": "clip2.mp4", "seed": 6, "output": "last"}]


def test_a_batch_runs_on_both_servers_keeps_clips_together_and_resumes(media, servers):
    fakes = servers(2)
    jobs = write_jobs(media / "jobs.csv", SIX)
    code, said = batch(jobs, fakes)
    assert code == 0, said
    records = manifest(media / "outputs" / "manifest.jsonl")
    assert [r["status"] for r in records] == ["done"] * 6
    assert [r["seed"] for r in records] == [1, 2, 3, 4, 5, 6]
    by_clip = {}
    for r, row in zip(records, SIX):
        by_clip.setdefault(row["video"], set()).add(r["server"])
        assert r["prompt_id"] and r["start"] <= r["end"] and r["attempts"] == 1
        out = media / "outputs" / r["output"]
        assert out.read_bytes() == f"VIDEO {r['prompt_id']}.mp4".encode()
    # each clip stays on one server (ComfyUI's cache then skips its tracking), and both servers worked
    assert all(len(s) == 1 for s in by_clip.values()) and len(set.union(*by_clip.values())) == 2
    assert records[5]["output"] == "last.mp4" and records[0]["output"] == "0002_a_clip1.mp4"
    for f in fakes:  # each file uploaded once per server, under a content-derived name
        assert all(n == 1 for n in f.uploads.values()) and all(k.startswith("fp_") for k in f.uploads)
    # the seed and steps reached the sampler
    prompts = [p for f in fakes for _, p in f.executed]
    assert sorted(p["19"]["inputs"]["seed"] for p in prompts) == [1, 2, 3, 4, 5, 6]
    assert sorted(p["19"]["inputs"]["steps"] for p in prompts) == [20, 30, 30, 30, 30, 30]
    # a second run re-runs nothing; a changed output file makes its job run again
    executed = sum(len(f.executed) for f in fakes)
    code, said = batch(jobs, fakes)
    assert code == 0 and "6 of 6 job(s) already done" in said and sum(len(f.executed) for f in fakes) == executed
    (media / "outputs" / "last.mp4").write_bytes(b"truncated")
    code, said = batch(jobs, fakes)
    assert code == 0 and "5 of 6 job(s) already done" in said and sum(len(f.executed) for f in fakes) == executed + 1


def test_every_bad_row_is_reported_and_nothing_is_queued(media, servers, capsys):
    fakes = servers(1)
    rows = [{"image": "a.png", "video": "clip1.mp4"},                      # line 2: fine
            {"image": "nope.png", "video": "clip1.mp4", "colour": "red"},  # line 3
            {"image": "a.png", "video": "clip1.mp4", "seed": "x"},         # line 4
            {"image": "a.png", "video": "gone.mp4", "steps": 0},           # line 5
            {"image": "a.png", "video": "clip1.mp4", "size": "500x500"},   # line 6
            {"image": "a.png", "video": "clip1.mp4", "output": "o"},       # line 7
            {"image": "b.png", "video": "clip2.mp4", "output": "o"},       # line 8
            {"image": "a.png", "video": "clip1.mp4", "set": "19.nothing=1"},  # line 9
            {"image": "a.png", "video": "clip1.mp4", "mapping": "2,1"}]   # line 10: single has no Combine
    jobs = write_jobs(media / "jobs.csv", rows)
    code = main(["batch", jobs, "--server", fakes[0].url])
    err = capsys.readouterr().err
    assert code == 2
    for said in ("line 3: unknown column(s) colour", "line 3: image not found", "line 4: seed 'x' is not an integer",
                 "line 5: driving video not found", "line 5: steps '0' is out of range",
                 "line 6: size '500x500' must be 480p, 720p or WIDTHxHEIGHT in multiples of 16",
                 "line 8: output o.mp4 is also written by line 7",
                 "line 9: set '19.nothing=1': node 19 (FantasyPortraitSampler) has no input 'nothing'",
                 "line 10: mapping: fantasyportrait_single_api.json has no FantasyPortraitMultiCombine node",
                 "nothing was queued"):
        assert said in err, (said, err)
    assert "line 2" not in err and not fakes[0].pending and not fakes[0].executed and not fakes[0].uploads
    # --dry-run only validates: the good rows are listed, nothing is queued or written
    good = write_jobs(media / "good.jsonl", [rows[0], {"image": "b.png", "videos": ["clip2.mp4", "clip3.mp4"]}],
                      "jsonl")
    assert main(["batch", good, "--dry-run", "--server", fakes[0].url]) == 0
    err = capsys.readouterr().err
    assert "fantasyportrait_people_from_videos_api.json" in err and "2 job(s) valid; nothing was queued" in err
    assert not fakes[0].executed and not (media / "outputs").exists()


def test_missing_model_files_on_a_server_are_reported_before_queueing(media, servers):
    fakes = servers(1)
    jobs = write_jobs(media / "jobs.csv", [{"image": "a.png", "video": "clip1.mp4",
                                            "set": "1.unet_name=wan2.1_i2v_720p_14B_bf16.safetensors"}])
    with pytest.raises(Exception, match="wan2.1_i2v_720p_14B_bf16.safetensors .node 1, UNETLoader.unet_name.: put "
                                        "it in ComfyUI/models/diffusion_models/"):
        batch(jobs, fakes)
    assert not fakes[0].executed


def test_a_killed_server_loses_no_job(media, servers):
    fakes = servers(2, seconds=0.4)
    jobs = write_jobs(media / "jobs.csv", SIX)
    killed = {}

    def kill_second():  # once it has finished a job and is running another
        done = len(fakes[1].executed)  # read first: the running job may finish meanwhile
        if done and fakes[1].running:
            killed["at"] = done
            fakes[1].kill()
        return bool(killed)

    code, said = batch_watched(jobs, fakes, kill_second)
    assert code == 0, said
    assert "lost   " in said and "goes to another server" in said
    records = manifest(media / "outputs" / "manifest.jsonl")
    assert [r["status"] for r in records] == ["done"] * 6
    assert sum(r["server"] == fakes[1].url for r in records) == killed["at"]
    assert all((media / "outputs" / r["output"]).is_file() for r in records)


def test_a_restarted_server_is_noticed_and_its_prompts_rerun(media, servers):
    fakes = servers(1, seconds=0.5)
    jobs = write_jobs(media / "jobs.csv", SIX[:3])
    def restart():
        if fakes[0].running:
            fakes[0].forget()  # restarted between two polls: the prompt vanished
            return True
        return False

    code, said = batch_watched(jobs, fakes, restart)
    assert code == 0, said
    assert "is no longer known" in said
    assert [r["status"] for r in manifest(media / "outputs" / "manifest.jsonl")] == ["done"] * 3


def test_input_failures_are_not_retried_transient_ones_are(media, servers):
    fakes = servers(1, fail_seeds={2}, flaky_seeds={3})
    jobs = write_jobs(media / "jobs.csv", SIX[:3])
    code, said = batch(jobs, fakes, retries=2)
    assert code == 1
    records = manifest(media / "outputs" / "manifest.jsonl")
    assert [r["status"] for r in records] == ["done", "failed", "done"]
    assert "FantasyPortraitSampler) failed: FantasyPortraitError: bad input for this job" in records[1]["error"]
    assert records[1]["attempts"] == 1 and records[2]["attempts"] == 2  # the out-of-memory one was retried
    seeds = [p["19"]["inputs"]["seed"] for _, p in fakes[0].executed]
    assert seeds.count(2) == 1 and seeds.count(3) == 2
    assert "retry  line 4" in said


@pytest.mark.parametrize("cancel_running", [False, True])
def test_ctrl_c_takes_the_batch_off_every_queue(media, servers, cancel_running):
    fakes = servers(2, seconds=3.0)
    jobs = write_jobs(media / "jobs.csv", SIX)

    def interrupt(text):
        if all(f.running for f in fakes) and sum(len(f.pending) for f in fakes) >= 2:
            raise KeyboardInterrupt

    code, said = batch(jobs, fakes, status_line=interrupt, per_server=3, cancel_running=cancel_running)
    assert code == 130
    assert not any(f.pending for f in fakes)  # no prompt of the batch waits in either queue
    assert said.count("stopped: removed") == 2
    records = manifest(media / "outputs" / "manifest.jsonl")
    assert {r["status"] for r in records} == {"queued"}  # consistent: nothing left "running"
    if cancel_running:
        for f in fakes:
            for _ in range(100):
                if f.running is None:
                    break
                time.sleep(0.05)
        assert all(f.running is None for f in fakes)
        assert all(f.history[pid]["status"]["messages"][0][0] == "execution_interrupted" for f in fakes
                   for pid, _ in f.executed)


def test_the_manifest_may_live_in_a_folder_of_its_own(media, servers):
    code, said = batch(write_jobs(media / "jobs.csv", SIX[:1]), servers(1), manifest=str(media / "runs" / "m.jsonl"))
    assert code == 0, said
    assert [r["status"] for r in manifest(media / "runs" / "m.jsonl")] == ["done"]


def test_headers_reach_the_server_and_are_never_recorded(media, servers, monkeypatch, tmp_path, capsys):
    fakes = servers(2)
    monkeypatch.setenv("FP_TOKEN", "s3cret-token")
    listing = tmp_path / "servers.txt"
    listing.write_text(f"# farm\n{fakes[1].url} | Authorization: Bearer ${{FP_TOKEN}}\n")
    parsed = parse_servers([fakes[0].url], str(listing), ["X-Team: portraits"])
    assert parsed == [(fakes[0].url, {"X-Team": "portraits"}),
                      (fakes[1].url, {"X-Team": "portraits", "Authorization": "Bearer s3cret-token"})]
    jobs = write_jobs(media / "jobs.csv", SIX[:4])
    assert main(["batch", jobs, "--server", fakes[0].url, "--servers-file", str(listing),
                 "--header", "X-Team: portraits"]) == 0
    out = capsys.readouterr()
    assert all(h.get("X-Team") == "portraits" for h in fakes[0].headers_seen + fakes[1].headers_seen)
    assert all(h.get("Authorization") == "Bearer s3cret-token" for h in fakes[1].headers_seen)
    text = out.out + out.err + (media / "outputs" / "manifest.jsonl").read_text()
    assert "s3cret" not in text and "4/4 done" in out.err
    with pytest.raises(Exception, match="A header starting 'Bad' is not written 'Name: value'") as bad:
        parse_servers([], None, ["Bad s3cret-token"])
    assert "s3cret" not in str(bad.value)  # a malformed header is named by its first word only
    monkeypatch.delenv("FP_TOKEN")
    with pytest.raises(Exception, match="reads \\$\\{FP_TOKEN\\}, but the environment variable FP_TOKEN is not set"):
        parse_servers([], str(listing), [])


def test_jobs_file_formats_and_defaults(media):
    jsonl = write_jobs(media / "jobs.jsonl", [{"image": "a.png", "videos": ["clip1.mp4", "clip2.mp4"],
                                               "mapping": "2,1", "prompt": "two friends", "size": "720p"},
                                              {"image": "a.png", "video": "clip1.mp4", "size": "832x480",
                                               "workflow": "single", "cfg": 2.5}], "jsonl")
    jobs, _ = load_jobs(jsonl)
    first, second = jobs
    assert os.path.basename(first.workflow) == "fantasyportrait_people_from_videos_api.json"  # two drivers
    changes = {(n, k): v for n, k, v in first.changes}
    assert changes[("30", "mapping")] == "2,1" and changes[("4", "text")] == "two friends"
    assert changes[("24", "resolution")] == "720p"
    changes = {(n, k): v for n, k, v in second.changes}
    assert (changes[("18", "width")], changes[("18", "height")], changes[("19", "cfg")]) == (832, 480, 2.5)
    assert second.seed == 42  # the workflow's own seed is recorded when the row gives none
    assert first.key != second.key and len({j.output for j in jobs}) == 2


def test_a_long_video_job_sets_the_long_node(media):
    """`workflow` long: the named columns and a WIDTHxHEIGHT size reach FantasyPortrait Long Video (node 60)."""
    jobs, _ = load_jobs(write_jobs(media / "jobs.csv", [{"image": "a.png", "video": "clip1.mp4", "workflow": "long",
                                                         "seed": 9, "steps": 8, "cfg": 1.5, "portrait_cfg": 3,
                                                         "strength": 0.8, "size": "640x352"}]))
    (job,) = jobs
    assert os.path.basename(job.workflow) == "fantasyportrait_long_api.json"
    changes = {(n, k): v for n, k, v in job.changes}
    assert {k: changes[("60", k)] for k in ("seed", "steps", "cfg", "portrait_cfg", "portrait_strength", "width",
                                            "height")} == {"seed": 9, "steps": 8, "cfg": 1.5, "portrait_cfg": 3.0,
                                                           "portrait_strength": 0.8, "width": 640, "height": 352}
    assert job.seed == 9
