"""The package follows the data: every module imports only from its own stage or earlier ones, the core
never imports ComfyUI nor the tools (the layer on top of it: ``fantasyportrait_tools`` may import the core,
never the reverse), and the README's layout table names paths that exist."""

import ast
import os
import re

from conftest import ROOT

CORE = os.path.join(ROOT, "fantasyportrait_core")
#: stage of each top-level module or subpackage, in data-flow order
STAGES = {"errors": 0, "weights": 0, "video": 1, "faces": 2, "motion": 3, "tokens": 4, "branch": 5, "sizing": 5,
          "longvideo": 6, "evaluation": 6, "__init__": 7}
TOOLS = os.path.join(ROOT, "fantasyportrait_tools")


def stage_of(dotted: str) -> int:
    return STAGES[dotted.split(".")[1]]


def imports_of(path: str, dotted: str):
    """Absolute dotted names of the pack modules a file imports (relative imports resolved)."""
    tree = ast.parse(open(path).read())
    package = dotted.rsplit(".", 1)[0] if not path.endswith("__init__.py") else dotted
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                names = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
                yield from names
            elif node.module:
                yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names)


def core_modules(top=CORE):
    for dirpath, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                yield path, rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def test_imports_only_go_downstream():
    upstream = []
    for path, dotted in core_modules():
        own = stage_of(dotted) if dotted != "fantasyportrait_core" else 7
        for target in imports_of(path, dotted):
            if target.startswith("fantasyportrait_core.") and stage_of(target) > own:
                upstream.append(f"{dotted} imports {target}")
    assert upstream == []
    assert len(list(core_modules())) >= 25


def test_the_core_never_imports_comfyui_nor_the_tools():
    for path, dotted in core_modules():
        for target in imports_of(path, dotted):
            assert target.split(".")[0] not in ("comfy", "comfy_api", "folder_paths", "nodes", "comfy_extras",
                                                "fantasyportrait_tools"), f"{dotted} imports {target}"


def test_the_tools_sit_on_the_core_and_stay_small():
    """The tools import the core (never ComfyUI); no Python file of the pack is over 400 lines."""
    tools = list(core_modules(TOOLS))
    assert {dotted for _, dotted in tools} >= {"fantasyportrait_tools.cli", "fantasyportrait_tools.runner"}
    for path, dotted in tools:
        for target in imports_of(path, dotted):
            assert target.split(".")[0] not in ("comfy", "comfy_api", "folder_paths", "nodes"), f"{dotted}: {target}"
    long = []
    for dirpath, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]
        for f in files:
            if f.endswith(".py"):
                with open(os.path.join(dirpath, f)) as fh:
                    count = sum(1 for _ in fh)
                if count > 400:
                    long.append(f"{os.path.relpath(os.path.join(dirpath, f), ROOT)}: {count} lines")
    assert long == []


def test_the_readme_layout_table_matches_the_tree():
    text = open(os.path.join(ROOT, "README.md")).read()
    table = text[text.index("## Layout"):text.index("## Model files")]
    named = set()
    for cell in re.findall(r"^\| `([^|]+)` \|", table, re.M):
        folder = ""
        for path in re.findall(r"([\w/.]+)", cell.replace("`", "")):
            path = path if "/" in path else folder + path  # "a/b.py, c.py": c.py is in a/
            folder = path.rsplit("/", 1)[0] + "/" if "/" in path else ""
            named.add(path)
    for path in named:
        assert os.path.exists(os.path.join(ROOT, path)), path
    for module in re.findall(r"`(\w+\.py)`", table):  # module names given inside a package's row
        assert any(module in files for _, _, files in os.walk(ROOT)), module
    packages = {d for d in os.listdir(CORE) if os.path.isdir(os.path.join(CORE, d)) and d != "__pycache__"}
    assert all(f"fantasyportrait_core/{p}/" in named for p in packages), packages


#: what ComfyUI's community install test (comfy-test, level SYNTAX) refuses in a node pack's Python files: raw
#: torch layers that have a comfy.ops twin (ComfyUI's models take ``operations=``), hard-coded CUDA, autocast
NOT_COMFY_NATIVE = re.compile(r"(?<![\w.])(?:torch\.)?nn\.(?:Linear|Conv[123]d|ConvTranspose[12]d|LayerNorm|GroupNorm|"
                              r"Embedding)\s*\(|\.cuda\s*\(|\.to\s*\(\s*(?:torch\.device\s*\(\s*)?[\"']cuda|"
                              r"autocast\s*\(")


def test_no_layer_or_device_that_bypasses_comfyui():
    found = []
    for dirpath, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]
        for f in files:
            if f.endswith(".py"):
                with open(os.path.join(dirpath, f), encoding="utf-8") as fh:
                    for number, line in enumerate(fh, 1):
                        if not line.lstrip().startswith("#") and NOT_COMFY_NATIVE.search(line):
                            found.append(f"{os.path.relpath(os.path.join(dirpath, f), ROOT)}:{number}: {line.strip()}")
    assert found == []
