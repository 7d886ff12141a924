"""``fantasyportrait batch``: throughput on one vs two real ComfyUI servers, and the runner's overhead
per job against posting the same prompts by hand.

Needs a ComfyUI host (``COMFYUI_DIR``, ``COMFYUI_PYTHON``; ``../shared/host/setup-comfyui.sh`` builds
one). Starts two headless servers with the tiny test models (tests/comfy_models.py) and runs the same
batch of ``--jobs`` one-person jobs (jgz.mp4, 9 frames, 64x64, 2 steps, a different seed each):

* throughput: the batch on one server, then on two (wall time ratio);
* overhead: on one server, "by hand" (upload the two files once, post every prompt at once, poll
  /history until all are done, download every video) against ``fantasyportrait batch --per-server 2``
  on the same prompts (new seeds for each run, so ComfyUI's cache cannot skip the sampling of either).

Usage: COMFYUI_DIR=... COMFYUI_PYTHON=... python benchmarks/bench_batch.py [--jobs 6]
Each server runs with one CPU thread (OMP_NUM_THREADS=1), standing in for a farm where each server has
its own GPU; two servers with two threads each on a 2-core machine oversubscribe it. Timings vary between runs; compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import atexit
import csv
import os
import pathlib
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

def write_jobs(path, image, video, seeds):
    from comfy_servers import tiny_sets

    tiny = ";".join(tiny_sets("fantasyportrait_single"))
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, ["image", "video", "seed", "steps", "size", "set"])
        writer.writeheader()
        writer.writerows({"image": image, "video": video, "seed": s, "steps": 2, "size": "64x64", "set": tiny}
                         for s in seeds)
    return str(path)


def run_batch_on(jobs, servers, out_dir, per_server=1):
    from fantasyportrait_tools.batch import run_batch

    t0 = time.perf_counter()
    code = run_batch(jobs, [(s.url, {}) for s in servers], out_dir=out_dir, per_server=per_server,
                     say=lambda s: None)
    assert code == 0, "the batch failed"
    return time.perf_counter() - t0


def by_hand(jobs, server, out_dir):
    """The least a client must do: the same prompts, all posted at once, then collected."""
    from fantasyportrait_tools.batch import job_workflow, load_jobs
    from fantasyportrait_tools.runner import ComfyClient, fill_inputs, saved_files

    job_list, workflows = load_jobs(jobs)
    t0 = time.perf_counter()
    client = ComfyClient(server.url)
    image = client.upload(job_list[0].image)
    video = client.upload(job_list[0].videos[0])
    ids = [client.queue(fill_inputs(job_workflow(j, workflows), image, [video])) for j in job_list]
    pending = set(ids)
    while pending:
        time.sleep(0.1)
        for pid in list(pending):
            entry = client.get_json(f"/history/{pid}").get(pid)
            if entry and entry.get("status", {}).get("completed"):
                data = client.download(saved_files(entry)[0])
                (pathlib.Path(out_dir) / f"{pid}.mp4").write_bytes(data)
                pending.discard(pid)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=6)
    args = ap.parse_args()
    from conftest import HAVE_COMFYUI

    if not HAVE_COMFYUI:
        raise SystemExit("set COMFYUI_DIR (and COMFYUI_PYTHON) to a ComfyUI host: ../shared/host/setup-comfyui.sh")
    from comfy_servers import ComfyServer, make_base
    from media import media_path

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="bench_batch_"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # the tiny models alone are 250 MB
    first = make_base(tmp / "a")
    make_base(tmp / "b", models_from=first)
    # one CPU thread per server, as each server of a farm has its own GPU: two servers with 2 threads each on
    # 2 cores oversubscribe them (measured: 3.6x slower than one server)
    one_thread = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    image, video = media_path("man.jpeg"), media_path("jgz.mp4")
    n = args.jobs
    servers = []
    try:
        for name in ("a", "b"):
            servers.append(ComfyServer(tmp / name, tmp / f"{name}.log", env=one_thread))
        warm = write_jobs(tmp / "warm.csv", image, video, [0])  # models loaded, clip tracked, on both servers
        run_batch_on(warm, servers[:1], str(tmp / "w1"))
        run_batch_on(warm, servers[1:], str(tmp / "w2"))
        one = run_batch_on(write_jobs(tmp / "one.csv", image, video, range(100, 100 + n)), servers[:1],
                           str(tmp / "one"))
        two = run_batch_on(write_jobs(tmp / "two.csv", image, video, range(200, 200 + n)), servers,
                           str(tmp / "two"))
        (tmp / "hand").mkdir()
        hand = by_hand(write_jobs(tmp / "hand.csv", image, video, range(300, 300 + n)), servers[0], str(tmp / "hand"))
        runner = run_batch_on(write_jobs(tmp / "runner.csv", image, video, range(400, 400 + n)), servers[:1],
                              str(tmp / "runner"), per_server=2)
    finally:
        for s in servers:
            s.stop()
    print(f"{n} tiny one-person jobs (9 frames, 64x64, 2 steps); servers with 1 CPU thread each, "
          f"{os.cpu_count()} cores")
    print(f"throughput: one server {one:.1f} s ({n / one * 60:.1f} jobs/min), two servers {two:.1f} s "
          f"({n / two * 60:.1f} jobs/min): ratio {one / two:.2f}x")
    print(f"overhead: by hand {hand:.1f} s, fantasyportrait batch --per-server 2 {runner:.1f} s on one server: "
          f"{(runner - hand) / n * 1000:+.0f} ms per job, ratio {runner / hand:.2f}x")


if __name__ == "__main__":
    main()
