"""Run after the pack is installed (ComfyUI-Manager and comfy-cli run a pack's ``install.py``; ``fantasyportrait
setup`` runs it too): installs ONNX Runtime for the face models only when the environment has none of its
builds. A ComfyUI that has ``onnxruntime-gpu`` (or DirectML, OpenVINO, ...) keeps it: installing the CPU build
beside it would break both (they ship the same ``onnxruntime`` module), which is why ``requirements.txt`` does
not name it. It also copies the pack's example inputs (``examples/``) into ComfyUI's input folder as
``fantasyportrait_example_*`` (files already there are left alone), so the shipped templates run as they open.
``--dry-run`` says what it would do."""

import importlib.metadata
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

BUILDS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino", "onnxruntime-rocm",
          "onnxruntime-silicon", "onnxruntime-qnn")


def installed_builds() -> list[str]:
    """The ONNX Runtime builds installed in this Python, as 'name version'."""
    found = set()
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name in BUILDS:
            found.add(f"{name} {dist.version}")
    return sorted(found)


def copy_examples(dry_run: bool) -> None:
    """The example inputs into ComfyUI's input folder, when this pack sits in a ComfyUI's custom_nodes/."""
    comfy = os.path.dirname(os.path.dirname(HERE))
    if os.path.basename(os.path.dirname(HERE)) != "custom_nodes" or not os.path.isfile(os.path.join(comfy, "main.py")):
        return
    sys.path.insert(0, HERE)
    from fantasyportrait_tools.example_inputs import FILES, PREFIX, copy_to_input

    if dry_run:
        print(f"FantasyPortrait: would copy the examples ({', '.join(PREFIX + f for f in FILES)}) into "
              f"{os.path.join(comfy, 'input')}")
    else:
        copy_to_input(os.path.join(comfy, "input"), lambda line: print(f"FantasyPortrait: {line}"))


def main(argv=None) -> int:
    dry_run = "--dry-run" in (sys.argv[1:] if argv is None else argv)
    copy_examples(dry_run)
    found = installed_builds()
    if found:
        print(f"FantasyPortrait: ONNX Runtime is installed ({', '.join(found)}); nothing to install")
        return 0
    cmd = [sys.executable, "-m", "pip", "install", "onnxruntime"]
    print(f"FantasyPortrait: no ONNX Runtime in {sys.executable}; {'would run' if dry_run else 'running'} "
          f"{' '.join(cmd)}")
    return 0 if dry_run else subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
