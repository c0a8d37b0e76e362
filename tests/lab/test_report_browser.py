"""The HTML report in a real headless browser: rendered, screenshot, every figure loaded and visibly non-empty.

Needs Chromium (Debian's ``chromium``, installed by ``scripts/setup.sh test`` where apt-get is usable; or
``$OPTIMLAB_BROWSER``); skipped, saying so, where none is installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")

# After the page has loaded (images included), write what the browser made of every <img> into the DOM.
PROBE = """<script>window.addEventListener('load', () => {
  const rows = [...document.images].map(i => { const r = i.getBoundingClientRect();
    return {src: i.getAttribute('src'), figure: i.dataset.figure || '', complete: i.complete,
            natural: [i.naturalWidth, i.naturalHeight],
            box: [r.left + scrollX, r.top + scrollY, r.width, r.height]}; });
  const pre = document.createElement('pre'); pre.id = 'optimlab-probe';
  pre.textContent = JSON.stringify({images: rows, width: document.documentElement.scrollWidth,
                                    height: document.documentElement.scrollHeight});
  document.body.appendChild(pre); });</script>"""


def _browser() -> str | None:
    given = os.environ.get("OPTIMLAB_BROWSER")
    if given:
        return given
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


def _chromium(browser: str, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=10000"]
    return subprocess.run([browser, *flags, *args], capture_output=True, text=True, timeout=120)


def test_report_renders_in_a_headless_browser_with_every_figure(tiny_study, tmp_path: Path) -> None:
    browser = _browser()
    if browser is None:
        pytest.skip("no Chromium found (scripts/setup.sh test installs Debian's chromium; or set $OPTIMLAB_BROWSER)")
    out, _ = tiny_study
    page = tmp_path / "page"
    shutil.copytree(out, page)  # the probe goes into a copy: the shared folder stays as compare wrote it
    html = (page / "report.html").read_text()
    (page / "probe.html").write_text(html.replace("</body>", PROBE + "</body>"))

    dom = _chromium(browser, "--window-size=1280,1000", "--dump-dom", (page / "probe.html").as_uri())
    found = re.search(r'<pre id="optimlab-probe">(.*?)</pre>', dom.stdout, re.S)
    assert found, dom.stderr[-2000:]
    probe = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    images = probe["images"]
    figures = {i["figure"] for i in images}
    assert {"answer", "curves", "lr_sensitivity", "generalization"} <= figures, figures
    assert len(images) == len(re.findall(r"<img ", html))
    for img in images:  # each loaded (a broken link has natural size 0) and laid out at a visible size
        assert img["complete"] and min(img["natural"]) > 100, img
        assert img["box"][2] > 200 and img["box"][3] > 100, img

    shot = tmp_path / "report.png"
    width, height = 1280, min(int(probe["height"]) + 20, 16000)
    url = (page / "report.html").as_uri()
    done = _chromium(browser, f"--window-size={width},{height}", f"--screenshot={shot}", url)
    assert shot.exists(), done.stderr[-2000:]
    import matplotlib.image as mpimg

    pixels = mpimg.imread(shot)[..., :3]
    assert pixels.shape[:2] == (height, width)
    for img in images:  # the screenshot shows each figure: its region holds drawn content, not a blank box
        x, y, w, h = (int(round(v)) for v in img["box"])
        region = pixels[y : y + h, x : x + w]
        assert region.size, img
        ink = float(np.mean(region.min(axis=2) < 0.85))  # share of pixels darker than light grey
        assert 0.01 < ink < 0.9, (img["figure"], ink)
        assert len(np.unique((region * 15).astype(int).reshape(-1, 3), axis=0)) > 8, img["figure"]  # several colours
