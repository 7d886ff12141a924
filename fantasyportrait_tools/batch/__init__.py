"""Headless batch runs over one or many ComfyUI servers (``fantasyportrait batch``).

A tool on top of :mod:`..runner`: every ComfyUI server is a worker with its own queue and this package is their
client. :mod:`.jobs` reads and validates the jobs file (CSV or JSONL; every row checked before anything is
queued), :mod:`.servers` the servers and their headers, :mod:`.scheduling` gives each server at most
``per_server`` jobs at a time (jobs that share driving clips go to the same server back to back, so ComfyUI's
node cache skips re-extracting their motion), and :mod:`.manifest` records every state change in a JSONL
manifest (rewritten atomically), so a second run resumes where the first stopped. A job whose server
disappears goes to another server; a job that fails on its inputs is recorded as failed and not retried;
transient errors are retried with backoff.
"""

from .jobs import Job, JobsFileError, job_workflow, load_jobs
from .manifest import read_manifest, resume, summary, write_manifest
from .scheduling import Batch, run_batch
from .servers import Server, check_servers, parse_servers

__all__ = ["Batch", "Job", "JobsFileError", "Server", "check_servers", "job_workflow", "load_jobs", "parse_servers",
           "read_manifest", "resume", "run_batch", "summary", "write_manifest"]
