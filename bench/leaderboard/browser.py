"""Headless Chromium for the static page: the screenshot and the browser test share this launch.

Debian's ``chromium`` package is used (``/usr/bin/chromium``, or ``$MRIBENCH_CHROMIUM``), driven
through Playwright's Python client; Playwright's own browser download is never used. The flags
turn off everything that would make the browser reach the network on its own (component
updates, sync, background networking, QUIC) and each launch gets a fresh profile folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from bench.errors import MribenchError

CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-default-apps", "--disable-extensions", "--metrics-recording-only",
                 "--no-default-browser-check")


def chromium_path() -> str | None:
    """The Chromium executable: ``$MRIBENCH_CHROMIUM``, else ``chromium`` on PATH, else None."""
    explicit = os.environ.get("MRIBENCH_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextmanager
def open_page(width: int = 1280, height: int = 900) -> Iterator[object]:
    """A Playwright page in headless Chromium with a throwaway profile; closed on exit."""
    executable = chromium_path()
    if executable is None:
        raise MribenchError("no Chromium found: install Debian's package (apt-get install chromium) or set "
                            "MRIBENCH_CHROMIUM to its executable")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise MribenchError("the screenshot needs Playwright's Python client: pip install playwright "
                            "(its own browser download is not needed)") from None
    with tempfile.TemporaryDirectory(prefix="mribench-chromium-") as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=executable, headless=True, args=list(CHROMIUM_ARGS),
            viewport={"width": width, "height": height}, device_scale_factor=1)
        try:
            page = context.pages[0] if context.pages else context.new_page()
            yield page
        finally:
            context.close()


def screenshot(html: str | Path, out: str | Path, *, width: int = 1280, height: int = 1100) -> Path:
    """Open ``html`` from disk and save the top ``width`` x ``height`` pixels of the page as PNG."""
    html, out = Path(html).resolve(), Path(out)
    with open_page(width, height) as page:
        page.goto(html.as_uri(), wait_until="load")
        page.wait_for_function("Array.from(document.images).every(i => i.complete)")
        page.screenshot(path=str(out), full_page=False)
    return out
