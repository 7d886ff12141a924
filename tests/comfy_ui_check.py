"""Loads every UI-format workflow into the real ComfyUI frontend (headless Chromium) and compares each
node's widgets and links with the API-format twin. argv: SERVER_URL UI_DIR API_DIR [SCREENSHOT_DIR].
Prints one line per workflow; run by tests/test_comfyui.py when Chromium and Playwright are present."""
import glob
import json
import os
import sys

from playwright.sync_api import sync_playwright

url, wfdir, apidir = sys.argv[1], sys.argv[2], sys.argv[3]
with sync_playwright() as p:
    b = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"])
    page = b.new_page(viewport={"width": 1800, "height": 1100})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_function("window.app && window.app.graph && window.LiteGraph", timeout=60000)
    page.wait_for_timeout(3000)
    page.keyboard.press("Escape")
    page.wait_for_timeout(500)
    errors.clear()  # the frontend's own start-up noise
    for path in sorted(glob.glob(os.path.join(wfdir, "*.json"))):
        wf = json.load(open(path))
        api = json.load(open(os.path.join(apidir, os.path.basename(path)[:-5] + "_api.json")))
        res = page.evaluate("""async (wf) => {
            await window.app.loadGraphData(wf);
            const g = window.app.graph;
            return g._nodes.map(n => ({id: n.id, type: n.type, registered: !!LiteGraph.registered_node_types[n.type],
                widgets: (n.widgets || []).map(w => [w.name, w.value]),
                inputs: (n.inputs || []).map(i => [i.name, i.link != null])}));
        }""", wf)
        problems = []
        for n in res:
            if not n["registered"]:
                problems.append(f"{n['id']} {n['type']} not registered")
            if n["type"] == "Note":  # a frontend-only node: it has no API twin
                continue
            a = api[str(n["id"])]["inputs"]
            for name, value in n["widgets"]:
                if name in a and not isinstance(a[name], list) and a[name] != value:
                    problems.append(f"{n['id']} {n['type']}.{name}: UI {value!r} != API {a[name]!r}")
            linked = {nm for nm, l in n["inputs"] if l}
            for name, v in a.items():
                if isinstance(v, list) and name not in linked:
                    problems.append(f"{n['id']} {n['type']}.{name}: link missing in UI")
        page.evaluate("() => window.app.canvas.ds && (window.app.canvas.ds.scale = 0.5, window.app.canvas.ds.offset = [0, 0], window.app.graph.setDirtyCanvas(true, true))")
        page.wait_for_timeout(800)
        print(os.path.basename(path), len(res), "nodes;", "problems:", problems or "none", "errors:", errors); errors.clear()
        if len(sys.argv) > 4:
            page.screenshot(path=os.path.join(sys.argv[4], os.path.basename(path)[:-5] + ".png"))
    print("page errors:", errors[:5])
    b.close()
