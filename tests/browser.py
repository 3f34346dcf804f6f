"""A self-contained HTML report checked in a real headless Chromium (Debian's `chromium`).

`assert_renders(html, workdir, figures=N)` opens the page offline (a proxy that refuses every
connection, no name resolution), takes a screenshot and reads the DOM after load: the page
fetched nothing, each of its N figures is an embedded PNG that decodes, is not a flat image,
and loaded in the browser at its own size, and the screenshot is not blank. Any report
personagen writes (align, evaluate, adapt, an experiment's) can be checked the same way.
Without a Chromium binary the calling test is skipped, unless PERSONAGEN_REQUIRE_BROWSER=1
(CI), where it fails.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

BINARIES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
REQUIRE = os.environ.get("PERSONAGEN_REQUIRE_BROWSER") == "1"
OFFLINE = ["--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND"]
PNG = re.compile(r'<img[^>]*src="data:image/png;base64,([^"]+)"')
PROBE_ID = "personagen-probe"
PROBE = (
    "<script>window.addEventListener('load', function () {"
    "  var out = document.createElement('pre'); out.id = '" + PROBE_ID + "';"
    "  out.textContent = JSON.stringify({"
    "    images: Array.from(document.images).map(function (i) {"
    "      return [i.naturalWidth, i.naturalHeight, i.complete]; }),"
    "    fetched: performance.getEntriesByType('resource').map(function (e) { return e.name; }),"
    "    text: document.body.innerText.length});"
    "  document.body.appendChild(out); });</script>"
)
MIN_FIGURE = (200, 100)
"""Smallest width, height of a figure that shows something."""
MIN_COLOURS = 256
MIN_INK = 0.05
"""Share of the screenshot's pixels that are not white."""


def chromium() -> str:
    """The Chromium binary; skips the test without one (fails with
    PERSONAGEN_REQUIRE_BROWSER=1)."""
    for name in BINARIES:
        found = shutil.which(name)
        if found:
            return found
    message = "no Chromium binary (apt-get install chromium) for the browser check"
    if REQUIRE:
        pytest.fail(f"{message}, and PERSONAGEN_REQUIRE_BROWSER=1", pytrace=False)
    pytest.skip(message)


@dataclass(frozen=True)
class Rendered:
    """What the browser made of a page."""

    screenshot: Path
    images: list[list[int]]
    """naturalWidth, naturalHeight, complete (1/0) of each <img>, in page order."""
    fetched: list[str]
    """Every resource the page asked the network for."""
    text_chars: int
    colours: int
    """Distinct colours in the screenshot."""
    ink: float
    """Share of the screenshot's pixels that are not white."""


def render(html: Path, workdir: Path, *, width: int = 1200, height: int = 3000) -> Rendered:
    """Screenshot `html` and read its DOM after load (a copy with a probe script appended)."""
    binary = chromium()
    workdir.mkdir(parents=True, exist_ok=True)
    shot = workdir / f"{html.stem}.png"
    _chromium(binary, workdir, f"--screenshot={shot}", f"--window-size={width},{height}", html)
    probe = workdir / f"{html.stem}.probe.html"
    probe.write_text(html.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"))
    dom = _chromium(binary, workdir, "--virtual-time-budget=10000", "--dump-dom", probe)
    found = re.search(f'<pre id="{PROBE_ID}">([^<]*)</pre>', dom)
    assert found, f"the probe did not run in {html} (no load event?)"
    state = json.loads(found.group(1))
    with Image.open(shot) as image:
        counts = image.convert("RGB").getcolors(maxcolors=width * height) or []
    white = sum(count for count, rgb in counts if rgb == (255, 255, 255))
    return Rendered(
        screenshot=shot,
        images=[[w, h, int(done)] for w, h, done in state["images"]],
        fetched=state["fetched"],
        text_chars=state["text"],
        colours=len(counts),
        ink=1 - white / (width * height),
    )


def _chromium(binary: str, workdir: Path, *args: str | Path) -> str:
    profile = workdir / "chromium-profile"
    command = [
        binary,
        "--headless",
        "--disable-gpu",
        "--no-sandbox",
        "--no-first-run",
        f"--user-data-dir={profile}",
        *OFFLINE,
        *map(str, args[:-1]),
        Path(args[-1]).resolve().as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"chromium failed: {result.stderr[-2000:]}"
    return result.stdout


def embedded_pngs(html: Path) -> list[tuple[int, int, int]]:
    """(width, height, distinct colours) of each embedded PNG figure; fails on one that does
    not decode."""
    sizes = []
    for i, payload in enumerate(PNG.findall(html.read_text(encoding="utf-8"))):
        try:
            with Image.open(io.BytesIO(base64.b64decode(payload))) as image:
                image.load()
                assert image.format == "PNG", f"figure {i} is {image.format}, not PNG"
                colours = image.convert("RGB").getcolors(maxcolors=1 << 24) or []
                sizes.append((image.width, image.height, len(colours)))
        except (OSError, ValueError) as exc:
            raise AssertionError(f"figure {i} of {html} does not decode: {exc}") from exc
    return sizes


def assert_renders(html: Path, workdir: Path, *, figures: int) -> Rendered:
    """`html` shows `figures` real figures and renders, offline, to a page that is not blank."""
    pngs = embedded_pngs(html)
    assert len(pngs) == figures, f"{len(pngs)} embedded figures in {html}, expected {figures}"
    for i, (width, height, colours) in enumerate(pngs):
        assert width >= MIN_FIGURE[0] and height >= MIN_FIGURE[1], f"figure {i}: {width}x{height}"
        assert colours > 16, f"figure {i} is flat ({colours} colours)"
    page = render(html, workdir)
    assert page.fetched == [], f"the page fetched {page.fetched}: it must open offline"
    assert page.images == [[w, h, 1] for w, h, _ in pngs], "a figure did not load in the browser"
    assert page.text_chars > 200, "the page has next to no text"
    assert page.colours >= MIN_COLOURS and page.ink >= MIN_INK, (
        f"the screenshot looks blank: {page.colours} colours, {page.ink:.1%} ink "
        f"({page.screenshot})"
    )
    return page
