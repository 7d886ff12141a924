"""The batch manifest (``manifest.jsonl``): every job's state, rewritten atomically after every change, read
back to resume a batch, and the closing summary table."""

from __future__ import annotations

import json
import os

from .. import file_sha256
from .jobs import Job


def write_manifest(path: str, jobs: list[Job]) -> None:
    """All jobs, one JSON object per line, replaced atomically (a reader never sees half a file)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        for job in jobs:
            fh.write(json.dumps(job.record()) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_manifest(path: str) -> dict:
    if not os.path.isfile(path):
        return {}
    out = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
                out[rec["key"]] = rec
            except (ValueError, KeyError):
                continue
    return out


def resume(jobs: list[Job], manifest: dict, out_dir: str) -> int:
    """Mark jobs done when the manifest says so and their output is there, unchanged; returns how many."""
    skipped = 0
    for job in jobs:
        rec = manifest.get(job.key)
        path = os.path.join(out_dir, job.output)
        if rec and rec.get("status") == "done" and os.path.isfile(path) and os.path.getsize(path) == rec.get("size") \
                and file_sha256(path) == rec.get("sha256"):
            for k in ("status", "server", "prompt_id", "seed", "start", "end", "size", "sha256", "attempts"):
                setattr(job, k, rec.get(k))
            skipped += 1
    return skipped


def clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


def summary(jobs: list[Job]) -> str:
    rows = [("line", "status", "output", "server", "seconds", "error")]
    for job in jobs:
        took = f"{job.end - job.start:.1f}" if job.start and job.end and job.status == "done" else ""
        rows.append((str(job.line), job.status, job.output, job.server or "", took, (job.error or "")[:80]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
