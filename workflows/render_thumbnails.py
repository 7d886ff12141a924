"""Renders the template browser's thumbnails of the shipped UI workflows (``example_workflows/<name>.jpg``): each graph
loaded into ComfyUI's real frontend (headless Chromium through Playwright), fitted to the view, 512 px wide.

    python workflows/render_thumbnails.py SERVER_URL [OUT_DIR]   (a running ComfyUI with the pack; default:
    the pack's example_workflows/)
"""

import base64
import glob
import io
import json
import os
import sys

TEMPLATES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "example_workflows")
WIDTH, HEIGHT = 1280, 800  # the view each graph is fitted into (the thumbnail is this, scaled to 512 px wide)

FIT = """() => {
    document.querySelectorAll('.p-dialog-mask, .p-dialog').forEach(e => e.remove());  // welcome / template dialogs
    const nodes = window.app.graph._nodes;
    const x0 = Math.min(...nodes.map(n => n.pos[0])), y0 = Math.min(...nodes.map(n => n.pos[1] - 30));
    const x1 = Math.max(...nodes.map(n => n.pos[0] + n.size[0])), y1 = Math.max(...nodes.map(n => n.pos[1] + n.size[1]));
    const canvas = window.app.canvas, rect = canvas.canvas.getBoundingClientRect();
    const scale = 0.95 * Math.min(rect.width / (x1 - x0), rect.height / (y1 - y0));
    canvas.ds.scale = scale;
    canvas.ds.offset = [-x0 + (rect.width / scale - (x1 - x0)) / 2, -y0 + (rect.height / scale - (y1 - y0)) / 2];
    canvas.setDirty(true, true);
}"""


def main(url, out_dir=TEMPLATES):
    from PIL import Image
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
        page.goto(url)
        page.wait_for_function("window.app && window.app.graph && window.LiteGraph", timeout=60000)
        page.wait_for_timeout(3000)
        for path in sorted(glob.glob(os.path.join(TEMPLATES, "*.json"))):
            with open(path) as fh:
                page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", json.load(fh))
            page.wait_for_timeout(800)
            page.evaluate(FIT)
            page.wait_for_timeout(800)
            data = page.evaluate("() => window.app.canvas.canvas.toDataURL('image/png')")  # the graph alone, no UI
            shot = Image.open(io.BytesIO(base64.b64decode(data.split(",", 1)[1]))).convert("RGB")
            shot = shot.resize((512, round(512 * shot.height / shot.width)), Image.LANCZOS)
            target = os.path.join(out_dir, os.path.basename(path)[:-5] + ".jpg")
            shot.save(target, quality=85)
            print("wrote", target, shot.size)
        browser.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else TEMPLATES)
