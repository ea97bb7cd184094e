"""A real browser for the page's tests: Playwright driving Debian's Chromium (``apt-get install chromium``; CI installs
it with deploy/ci-setup.sh). Playwright's own browser builds are downloaded from a CDN, which this project never
uses. Where no browser can start, the tests skip and say why (CI turns such a skip into a failure)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

CHROMIUM_CANDIDATES = ("/usr/lib/chromium/chromium", "/usr/bin/chromium", "/usr/bin/chromium-browser")
ARTIFACTS = Path(os.environ.get("NNSERVE_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "web"


def chromium_path() -> str | None:
    """$NNSERVE_CHROMIUM, else Debian's binary (the real one, not its launcher script), else one on the PATH."""
    given = os.environ.get("NNSERVE_CHROMIUM")
    if given:
        return given
    found = next((p for p in CHROMIUM_CANDIDATES if os.access(p, os.X_OK)), None)
    return found or shutil.which("chromium")


def launch_chromium() -> Iterator[Any]:
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        pytest.skip("browser tests: the playwright package is not installed (pip install -e '.[dev]')")
    executable = chromium_path()
    if executable is None:
        pytest.skip("browser tests: no Chromium found (apt-get install chromium, or set NNSERVE_CHROMIUM)")
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=executable, args=["--disable-gpu"])
        except Error as error:
            pytest.skip(f"browser tests: Chromium at {executable} cannot start: {str(error).splitlines()[0]}")
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Watched:
    """A page and everything it did that a user would count as broken."""

    page: Any
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # requests with no answer
    urls: list[str] = field(default_factory=list)  # every request made
    statuses: list[tuple[int, str]] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def screenshot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def assert_clean(self) -> None:
        assert not self.page_errors, self.page_errors
        assert not self.console_errors, self.console_errors
        assert not self.failed, self.failed
        assert not [s for s in self.statuses if s[0] >= 400], self.statuses
        assert not self.dialogs, self.dialogs


def watch(page: Any) -> Watched:
    watched = Watched(page)
    page.on("console", lambda m: m.type == "error" and watched.console_errors.append(m.text))
    page.on("pageerror", lambda e: watched.page_errors.append(str(e)))
    page.on("requestfailed", lambda r: watched.failed.append(f"{r.method} {r.url}: {r.failure}"))
    page.on("request", lambda r: watched.urls.append(r.url))
    page.on("response", lambda r: watched.statuses.append((r.status, r.url)))

    def dialog(d: Any) -> None:
        watched.dialogs.append(d.message)
        d.dismiss()

    page.on("dialog", dialog)
    return watched
