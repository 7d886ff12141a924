"""Start-up of the light client: ``fantasyportrait run --help`` as whole processes, beside a bare interpreter.

Prints the median wall time over N runs and the peak resident memory of each command, and their ratio to
``python -c pass`` measured in the same run (this machine is noisy: compare the ratios).

    python benchmarks/bench_client_startup.py [--runs 9]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "fantasyportrait run --help": [sys.executable, "-m", "fantasyportrait_tools", "run", "--help"],
    "fantasyportrait batch --help": [sys.executable, "-m", "fantasyportrait_tools", "batch", "--help"],
    "fantasyportrait extract --help": [sys.executable, "-m", "fantasyportrait_tools", "extract", "--help"],
}


def measure(cmd, runs):
    """Median seconds and peak RSS (MB) of ``cmd`` over ``runs`` processes (RSS from wait4 per child)."""
    times, peaks = [], []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        times.append(time.perf_counter() - start)
        peaks.append(usage.ru_maxrss / 1024)  # KB on Linux
        assert os.waitstatus_to_exitcode(status) == 0, cmd
    return statistics.median(times), max(peaks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="processes per command (default 9)")
    args = parser.parse_args()
    base_t, base_m = None, None
    for label, cmd in COMMANDS.items():
        t, m = measure(cmd, args.runs)
        if base_t is None:
            base_t, base_m = t, m
        print(f"{label:34s} {t * 1000:7.0f} ms ({t / base_t:4.1f}x)  {m:6.1f} MB ({m / base_m:4.1f}x)")


if __name__ == "__main__":
    main()
