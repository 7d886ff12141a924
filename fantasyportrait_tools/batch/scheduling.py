"""Scheduling of a batch over its servers: each server a worker with at most ``per_server`` jobs at a time, jobs
that share driving clips kept on one server back to back (ComfyUI's node cache then skips their motion), lost
jobs moved to another server, transient errors retried with backoff, Ctrl-C taking the batch off every queue."""

from __future__ import annotations

import hashlib
import os
import queue
import sys
import threading
import time
from typing import Callable

from fantasyportrait_core.errors import FantasyPortraitError

from .. import file_sha256
from ..errors import RunError, ServerUnreachable
from ..runner import download_result, run_workflow
from ..workflow import fill_inputs
from .jobs import STATUSES, Job, job_workflow, load_jobs
from .manifest import clock, read_manifest, resume, summary, write_manifest
from .servers import Server, check_servers


class Batch:
    def __init__(self, jobs: list[Job], workflows: dict, servers: list[Server], out_dir: str, manifest: str,
                 retries: int = 3, timeout: float | None = None, say: Callable[[str], None] = print,
                 status_line: Callable[[str], None] | None = None, cancel_running: bool = False):
        self.jobs, self.workflows, self.servers = jobs, workflows, servers
        self.out_dir, self.manifest, self.retries, self.timeout = out_dir, manifest, retries, timeout
        self.say, self.status_line = say, status_line or (lambda s: None)
        self.cancel_running = cancel_running
        self.events: queue.Queue = queue.Queue()
        self.stopping = threading.Event()
        self.started = time.monotonic()
        self.digests: dict = {}
        self.durations: list[float] = []
        self.workers: list[threading.Thread] = []

    # --- scheduling -------------------------------------------------------------------------
    def pick(self, server: Server) -> Job | None:
        now = time.time()
        waiting = [j for j in self.jobs if j.status == "queued" and j.not_before <= now]
        if not waiting:
            return None
        same = [j for j in waiting if j.group == server.group]
        if same:
            return same[0]
        busy = {s.group for s in self.servers if s is not server and s.alive}
        fresh = [j for j in waiting if j.group not in busy]
        if fresh:
            job = fresh[0]
        else:  # every waiting job's clip is another server's: help only where at least two of them wait
            counts = {}
            for j in waiting:
                counts[j.group] = counts.get(j.group, 0) + 1
            shared = [j for j in waiting if counts[j.group] >= 2]
            if not shared:
                return None
            job = [j for j in shared if j.group == shared[0].group][-1]  # from the end: the owner keeps its run
        server.group = job.group
        return job

    def run(self) -> bool:
        os.makedirs(os.path.dirname(self.manifest), exist_ok=True)  # --manifest may name a folder of its own
        write_manifest(self.manifest, self.jobs)
        try:
            while any(j.status in ("queued", "running") for j in self.jobs):
                for server in self.servers:
                    if not server.alive and time.monotonic() - server.checked > 5:
                        if server.probe():
                            self.say(f"{server.url} answers again")
                    while server.alive and server.in_flight < server.slots:
                        job = self.pick(server)
                        if job is None:
                            break
                        self.launch(server, job)
                if not any(s.alive for s in self.servers) and not any(j.status == "running" for j in self.jobs):
                    self.wait_for_a_server()
                try:
                    event = self.events.get(timeout=0.5)
                except queue.Empty:
                    event = None
                while event is not None:
                    self.handle(*event)
                    try:
                        event = self.events.get_nowait()
                    except queue.Empty:
                        event = None
                self.status_line(self.progress_text())
        except KeyboardInterrupt:
            self.stop()
            return False
        return all(j.status == "done" for j in self.jobs)

    def wait_for_a_server(self, limit: float = 300.0) -> None:
        self.say(f"no server answers; trying again for up to {limit:.0f} s")
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            time.sleep(2)
            if any(s.probe() for s in self.servers):
                return
        for job in self.jobs:
            if job.status == "queued":
                job.status, job.error = "failed", "no server could be reached"
        write_manifest(self.manifest, self.jobs)

    def launch(self, server: Server, job: Job) -> None:
        server.in_flight += 1
        job.status, job.server, job.start, job.end, job.error, job.step = "running", server.url, time.time(), None, None, ""
        job.prompt_id = None
        job.attempts += 1
        job.run += 1
        write_manifest(self.manifest, self.jobs)
        worker = threading.Thread(target=self.work, args=(server, job, job.run), daemon=True)
        self.workers.append(worker)
        worker.start()

    def work(self, server: Server, job: Job, run: int) -> None:
        put = lambda kind, info: self.events.put((kind, server, job, run, info))  # noqa: E731
        try:
            names = [self.upload(server, path) for path in [job.image, *job.videos]]
            wf = fill_inputs(job_workflow(job, self.workflows), names[0], names[1:])

            def queued(prompt_id):
                server.prompts[prompt_id] = job.key  # registered before anything can stop the batch's cleanup
                put("queued", prompt_id)

            entry = run_workflow(server.client, wf, lambda text: put("step", text), timeout=self.timeout,
                                 on_queued=queued, stop=self.stopping.is_set)
            data = download_result(server.client, entry)
            path = os.path.join(self.out_dir, job.output)
            tmp = f"{path}.part"
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
            put("done", (len(data), hashlib.sha256(data).hexdigest()))
        except ServerUnreachable as exc:
            put("lost", str(exc))
        except RunError as exc:
            put("retry" if exc.transient else "failed", str(exc))
        except FantasyPortraitError as exc:
            put("failed", str(exc))
        except Exception as exc:  # noqa: BLE001 - a worker must report, never vanish
            put("retry", f"{type(exc).__name__}: {exc}")

    def upload(self, server: Server, path: str) -> str:
        """Upload once per server under a content-derived name (same clip, same name: ComfyUI's cache
        then skips the nodes that only depend on it)."""
        if path not in self.digests:
            self.digests[path] = file_sha256(path)[:12]
        name = f"fp_{self.digests[path]}_{os.path.basename(path)}"
        if path not in server.uploaded:
            server.uploaded[path] = server.client.upload(path, name)
        return server.uploaded[path]

    def handle(self, kind: str, server: Server, job: Job, run: int, info) -> None:
        if job.status != "running" or job.run != run:
            return  # a late report about an earlier launch of the job
        if kind == "queued":
            job.prompt_id = info
        elif kind == "step":
            job.step = info
            return
        else:
            server.in_flight -= 1
            server.prompts.pop(job.prompt_id, None)
            job.end = time.time()
            if kind == "done":
                job.status, job.size, job.sha256, job.error = "done", info[0], info[1], None
                self.durations.append(job.end - job.start)
                self.say(f"done   line {job.line}: {job.output} ({server.url}, {job.end - job.start:.1f} s)")
            elif kind == "failed":
                job.status, job.error = "failed", info
                self.say(f"failed line {job.line}: {info}")
            elif kind == "lost":
                server.alive, server.checked, server.group = False, time.monotonic(), None
                job.status, job.error, job.server = "queued", info, None
                job.attempts -= 1  # not the job's fault
                self.say(f"lost   {server.url}: {info}; line {job.line} goes to another server")
            elif kind == "retry":
                if job.attempts > self.retries:
                    job.status, job.error = "failed", f"{info} (after {job.attempts} attempts)"
                    self.say(f"failed line {job.line}: {job.error}")
                else:
                    delay = min(60.0, 2.0 ** job.attempts)
                    job.status, job.error, job.not_before = "queued", info, time.time() + delay
                    self.say(f"retry  line {job.line} in {delay:.0f} s: {info}")
        write_manifest(self.manifest, self.jobs)

    # --- control ----------------------------------------------------------------------------
    def progress_text(self) -> str:
        count = {s: sum(j.status == s for j in self.jobs) for s in STATUSES}
        elapsed = time.monotonic() - self.started
        left = count["queued"] + count["running"]
        eta = ""
        if self.durations and left:
            per = sum(self.durations) / len(self.durations) / max(1, sum(s.slots for s in self.servers if s.alive))
            eta = f", ~{clock(per * left)} left"
        steps = "; ".join(f"line {j.line}: {j.step}" for j in self.jobs if j.status == "running" and j.step)
        return (f"{count['done']}/{len(self.jobs)} done, {count['failed']} failed, {count['running']} running, "
                f"{count['queued']} waiting, {clock(elapsed)} elapsed{eta}" + (f" | {steps}" if steps else ""))

    def stop(self) -> None:
        """Ctrl-C: queue nothing more, take this batch's waiting prompts off every server's queue (and
        interrupt the running ones with ``cancel_running``), and leave the manifest consistent."""
        self.stopping.set()
        for worker in self.workers:  # they notice within a second or two, after registering any prompt
            worker.join(timeout=10)
        for server in self.servers:
            ours = set(server.prompts)
            if not ours:
                continue
            try:
                listing = server.client.get_json("/queue")
                pending = [item[1] for item in listing.get("queue_pending", []) if item[1] in ours]
                running = [item[1] for item in listing.get("queue_running", []) if item[1] in ours]
                if pending:
                    server.client.post_json("/queue", {"delete": pending})
                for prompt_id in running if self.cancel_running else []:
                    server.client.post_json("/interrupt", {"prompt_id": prompt_id})
                kept = "" if self.cancel_running or not running else f"; {len(running)} running prompt(s) left to finish"
                self.say(f"stopped: removed {len(pending)} waiting prompt(s) from {server.url}{kept}")
            except RunError as exc:
                self.say(f"could not clean up {server.url}: {exc}")
        for job in self.jobs:
            if job.status == "running":
                job.status, job.error, job.server = "queued", "stopped by the user before it finished", None
        write_manifest(self.manifest, self.jobs)


def run_batch(jobs_file: str, server_specs: list[tuple[str, dict]], out_dir: str | None = None,
              manifest: str | None = None, per_server: int = 1, retries: int = 3, timeout: float | None = None,
              dry_run: bool = False, cancel_running: bool = False, say: Callable[[str], None] | None = None,
              status_line: Callable[[str], None] | None = None, loaded: tuple | None = None) -> int:
    """The whole ``fantasyportrait batch`` command; returns the exit status (0 only when every job is done).
    ``loaded``: what :func:`load_jobs` already made of ``jobs_file`` (then it is not read again)."""
    say = say or (lambda s: print(s, file=sys.stderr))
    if per_server < 1:
        raise FantasyPortraitError("--per-server must be at least 1.")
    jobs, workflows = loaded or load_jobs(jobs_file)
    base = os.path.dirname(os.path.abspath(jobs_file))
    out_dir = os.path.abspath(out_dir or os.path.join(base, "outputs"))
    manifest = os.path.abspath(manifest or os.path.join(out_dir, "manifest.jsonl"))
    servers = [Server(url, headers, per_server) for url, headers in server_specs]
    if dry_run:
        if servers:
            check_servers(jobs, workflows, servers, say)
        for job in jobs:
            say(f"line {job.line}: {os.path.basename(job.image)} + {', '.join(map(os.path.basename, job.videos))} "
                f"-> {os.path.join(out_dir, job.output)} ({os.path.basename(job.workflow)}, seed {job.seed})")
        say(f"{len(jobs)} job(s) valid" + ("" if servers else " (no server given: files and values checked, "
                                              "not the servers' nodes and model files)") + "; nothing was queued")
        return 0
    check_servers(jobs, workflows, servers, say)
    os.makedirs(out_dir, exist_ok=True)
    skipped = resume(jobs, read_manifest(manifest), out_dir)
    if skipped:
        say(f"{skipped} of {len(jobs)} job(s) already done (outputs present and unchanged): skipped")
    batch = Batch(jobs, workflows, servers, out_dir, manifest, retries, timeout, say, status_line, cancel_running)
    ok = batch.run()
    say(summary(jobs))
    done = sum(j.status == "done" for j in jobs)
    say(f"{done}/{len(jobs)} done; manifest: {manifest}")
    return 0 if ok else (130 if batch.stopping.is_set() else 1)
