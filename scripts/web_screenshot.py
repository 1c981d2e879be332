#!/usr/bin/env python3
"""Draw the README's picture of the web demo: docs/web_demo.png.

    python scripts/web_screenshot.py [out.png]

Starts ``python -m gradcam_core.web`` (the bundled SqueezeNet) on a free port, opens the page in Debian's
headless Chromium through Playwright at 1920 x 1080, uploads images/cat_dog.jpg, explains label 243
("boxer") and takes a screenshot of the screen (the form and the result beside it), scaled to 1600 px
wide and stored with a 256-colour palette so the picture stays small (under 300 KB). Needs
``apt-get install chromium`` and ``pip install playwright`` (no browser download).
"""
from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
VIEWPORT = {"width": 1920, "height": 1080}
WIDTH = 1600  # of the stored picture
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def main(out: Path) -> None:
    from playwright.sync_api import sync_playwright

    server = subprocess.Popen([sys.executable, "-m", "gradcam_core.web", "-port", "0"], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        for line in server.stdout:
            found = re.search(r"Serving on (http://\S+/)", line)
            if found:
                url = found.group(1)
                break
        else:
            raise SystemExit("the server did not start")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium", args=ARGS)
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(url)
            page.set_input_files("#file", str(ROOT / "images" / "cat_dog.jpg"))
            page.fill("#label", "243")
            page.click("#explain")
            page.wait_for_selector("#img-gb_gcam[src^='data:image/png']")
            # every picture decoded and painted (a function: the page's CSP forbids evaluating strings)
            page.wait_for_function("() => [...document.querySelectorAll('#images img')].every(i => i.complete)")
            page.wait_for_timeout(200)
            shot = page.screenshot()
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    im = Image.open(io.BytesIO(shot)).convert("RGB")
    im = im.resize((WIDTH, round(im.height * WIDTH / im.width)), Image.LANCZOS)
    palette = im.quantize(256, method=Image.Quantize.MEDIANCUT)
    im.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG).save(out, optimize=True)
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "web_demo.png")
