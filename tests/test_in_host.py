"""Checks that run inside the real ComfyUI's Python: ``tests/host_*.py`` are pytest files that import the
host in-process (one ComfyUI boot per file, in COMFYUI_PYTHON); each of their tests is reported here as a
test of its own, with its own failure, so one broken check neither hides nor errors the others."""

import ast
import glob
import os
import subprocess
import xml.etree.ElementTree as ET

import pytest

from conftest import COMFYUI_PYTHON as PYTHON
from conftest import ROOT, requires_comfyui

pytestmark = requires_comfyui

HOST_FILES = sorted(glob.glob(os.path.join(ROOT, "tests", "host_*.py")))


def _test_names(path):
    with open(path) as fh:
        tree = ast.parse(fh.read())
    return [node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")]


CASES = [(os.path.basename(path), name) for path in HOST_FILES for name in _test_names(path)]


@pytest.fixture(scope="module")
def host_results(tmp_path_factory):
    """``run(file)``: that file's outcomes {test name: (outcome, text)}, from one pytest run in the host's
    Python (made once per file)."""
    done = {}

    def run(file):
        if file not in done:
            report = tmp_path_factory.mktemp("host") / "junit.xml"
            try:
                proc = subprocess.run([PYTHON, "-m", "pytest", os.path.join(ROOT, "tests", file), "-q", "-p",
                                       "no:cacheprovider", "-o", "python_files=host_*.py", f"--junitxml={report}"],
                                      cwd=ROOT, capture_output=True, text=True, timeout=900)
            except subprocess.TimeoutExpired as exc:  # reported once for the file, not retried per test
                proc = subprocess.CompletedProcess(exc.cmd, -1, f"timed out after {exc.timeout} s\n",
                                                   str(exc.stderr or "")[-4000:])
            outcomes = {}
            if report.exists():
                for case in ET.parse(report).getroot().iter("testcase"):
                    outcome, text = "passed", ""
                    for kind in ("failure", "error", "skipped"):
                        found = case.find(kind)
                        if found is not None:
                            outcome = "skipped" if kind == "skipped" else "failed"
                            text = (found.get("message") or "") + "\n" + (found.text or "")
                    outcomes[case.get("name")] = (outcome, text)
            done[file] = outcomes, proc.stdout[-4000:] + proc.stderr[-4000:]
        return done[file]

    return run


def _cases_of(outcomes: dict, name: str) -> dict:
    """The outcomes of test ``name``: itself, or each of its parametrized cases (``name[...]``)."""
    return {k: v for k, v in outcomes.items() if k == name or k.startswith(name + "[")}


@pytest.mark.parametrize("file,name", CASES, ids=[f"{f[:-3]}::{n}" for f, n in CASES])
def test_in_host(host_results, file, name):
    outcomes, output = host_results(file)
    cases = _cases_of(outcomes, name)
    assert cases, f"{file}::{name} did not run in the host:\n{output}"
    failed = {k: text for k, (outcome, text) in cases.items() if outcome == "failed"}
    assert not failed, "\n".join(f"{k}: {text[-6000:]}" for k, text in failed.items())
    if all(outcome == "skipped" for outcome, _ in cases.values()):
        pytest.skip("; ".join(text.strip() for _, text in cases.values()))


@pytest.mark.parametrize("file", [os.path.basename(p) for p in HOST_FILES])
def test_every_host_test_is_reported(host_results, file):
    """What ran in the host is what this file reports (a test the name scan missed would go unseen)."""
    outcomes, output = host_results(file)
    names = [n for f, n in CASES if f == file]
    assert sorted(outcomes) == sorted(k for n in names for k in _cases_of(outcomes, n)), output
    assert all(_cases_of(outcomes, n) for n in names), output
