"""Render a modelfusion report.html in headless Chromium and check its images show.

Usage:  python scripts/check_report_render.py runs/demo/results/report.html [--out shot.png]

Takes a full-page screenshot, then checks it is not blank (enough distinct colours and
non-white pixels) and that the browser decoded every embedded image (naturalWidth > 0),
using Chromium's --dump-dom after a small script marks broken images. Exits 1 on failure.
Needs Debian's `chromium` package (apt-get install chromium).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]

_PROBE = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images];
  document.body.setAttribute('data-images', imgs.length);
  document.body.setAttribute('data-broken', imgs.filter(i => !i.complete || i.naturalWidth === 0).length);
});</script>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    sys.exit("chromium not found: apt-get install chromium")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--out", type=Path, default=Path("report-screenshot.png"))
    parser.add_argument("--height", type=int, default=6000)
    args = parser.parse_args()
    browser = chromium()
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.html"
        probe.write_text(args.report.read_text().replace("</body>", _PROBE + "</body>"))
        common = [browser, *FLAGS, f"--user-data-dir={tmp}/profile"]
        dom = subprocess.run(
            [*common, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
        subprocess.run(
            [
                *common,
                f"--screenshot={args.out.resolve()}",
                f"--window-size=1280,{args.height}",
                args.report.resolve().as_uri(),
            ],
            capture_output=True,
            timeout=120,
            check=True,
        )
    import matplotlib.image as mpimg

    pixels = mpimg.imread(args.out)[..., :3]
    non_white = float((pixels.min(axis=2) < 0.95).mean())
    colours = len(np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0))
    n_images = _attr(dom, "data-images")
    broken = _attr(dom, "data-broken")
    print(
        f"screenshot {args.out} {pixels.shape[1]}x{pixels.shape[0]}: {non_white:.1%} non-white pixels, "
        f"{colours} distinct colours; images in page: {n_images}, not decoded: {broken}"
    )
    ok = non_white > 0.02 and colours > 50 and n_images >= 3 and broken == 0
    print("OK: the report renders with its images" if ok else "FAILED: blank page or broken images")
    return 0 if ok else 1


def _attr(dom: str, name: str) -> int:
    marker = f'{name}="'
    start = dom.find(marker)
    return int(dom[start + len(marker) : dom.find('"', start + len(marker))]) if start >= 0 else -1


if __name__ == "__main__":
    raise SystemExit(main())
