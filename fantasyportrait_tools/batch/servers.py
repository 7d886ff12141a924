"""The batch's servers: the ``--server`` / servers-file list with its headers, each server's state, and the check
of every workflow against every server before anything is queued."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from typing import Callable

from fantasyportrait_core.errors import FantasyPortraitError

from ..errors import RunError, ServerUnreachable
from ..runner import ComfyClient
from ..workflow import check_workflow
from .jobs import Job, JobsFileError, job_workflow


def _environment(variable: str, header: str) -> str:
    if variable not in os.environ:
        raise FantasyPortraitError(f"Header {header!r} reads ${{{variable}}}, but the environment variable "
                                   f"{variable} is not set: export it before running the batch.")
    return os.environ[variable]


def parse_servers(urls: list[str], servers_file: str | None, headers: list[str]) -> list[tuple[str, dict]]:
    """(url, headers) per server: ``--server`` URLs with the ``--header`` lines, and the lines of a servers
    file (``URL`` then optional ``| Name: value`` parts; ``${VAR}`` reads an environment variable)."""
    def header_dict(parts):
        out = {}
        for part in parts:
            name, colon, value = part.partition(":")
            if not colon or not name.strip():  # name only the first word: the rest may be a secret
                first = (part.split() or ["(empty)"])[0]
                raise FantasyPortraitError(f"A header starting {first!r} is not written 'Name: value'.")
            out[name.strip()] = re.sub(r"\$\{(\w+)\}", lambda m: _environment(m[1], name.strip()), value.strip())
        return out

    common = header_dict(headers)
    servers = [(u, dict(common)) for u in urls]
    if servers_file:
        if not os.path.isfile(servers_file):
            raise FantasyPortraitError(f"Servers file not found: {servers_file}")
        with open(servers_file, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if line and not line.startswith("#"):
                    url, *parts = [p.strip() for p in line.split("|")]
                    servers.append((url, {**common, **header_dict(parts)}))
    return servers


class Server:
    def __init__(self, url: str, headers: dict, slots: int):
        self.client = ComfyClient(url, timeout=60, headers=headers)
        # probing a lost server must not hold up the batch's event loop for the full request timeout
        self.prober = ComfyClient(url, timeout=5, headers=headers)
        self.url, self.slots = self.client.base, slots
        self.alive, self.in_flight, self.group = True, 0, None
        self.checked = 0.0
        self.uploaded: dict = {}
        self.prompts: dict = {}  # prompt id -> job key, for this batch's prompts on this server

    def probe(self) -> bool:
        self.checked = time.monotonic()
        try:
            self.prober.get_json("/system_stats")
            if not self.alive:
                self.uploaded.clear()  # a restarted server may have lost its input folder
            self.alive = True
        except RunError:
            self.alive = False
        return self.alive


def check_servers(jobs: list[Job], workflows: dict, servers: list[Server],
                  say: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> None:
    """Before queueing: every workflow (with its jobs' changes) can run on every reachable server."""
    reachable = [s for s in servers if s.probe()]
    if not reachable:
        raise ServerUnreachable("No server could be reached: " + ", ".join(s.url for s in servers) + ". Check "
                                "that ComfyUI runs there (and listens beyond localhost: --listen), the addresses "
                                "given with --server or --servers-file, and any --header it needs.")
    for server in servers:
        if not server.alive:
            say(f"{server.url} does not answer; it is tried again during the batch")
    problems = []
    for server in reachable:
        info = server.client.get_json("/object_info")
        checked = set()
        for job in jobs:
            wf = job_workflow(job, workflows)
            sig = json.dumps(wf, sort_keys=True)
            if sig in checked:
                continue
            checked.add(sig)
            try:
                check_workflow(wf, info)
            except RunError as exc:
                problems.append(f"line {job.line} on {server.url}: {exc}")
    if problems:
        raise JobsFileError(f"{len(problems)} problem(s) on the servers; nothing was queued:\n  "
                            + "\n  ".join(problems))
