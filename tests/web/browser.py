"""Real browsers for the page's tests, driven by Playwright: Debian's Chromium (over CDP) and Debian's Firefox ESR
(over WebDriver BiDi, Playwright's "moz-firefox" channel: no patched build), both installed by deploy/ci-setup.sh.
Playwright's own browser builds come from a CDN, which this project never uses. playwright is pinned at 1.64.1:
1.65 sends emulation.setMediaFeaturesOverride, which Firefox ESR 153 does not know. Where a browser cannot
start, its tests skip and say why (CI turns such a skip into a failure)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Error, sync_playwright

from tests.conftest import ROOT

ENGINES = ("chromium", "firefox")
CANDIDATES = {  # the real binaries, not Debian's launcher scripts
    "chromium": ("/usr/lib/chromium/chromium", "/usr/bin/chromium"),
    "firefox": ("/usr/lib/firefox-esr/firefox-esr", "/usr/bin/firefox-esr", "/usr/bin/firefox"),
}
PACKAGES = {"chromium": "chromium", "firefox": "firefox-esr"}
ARTIFACTS = Path(os.environ.get("NNSERVE_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "web"


def browser_path(engine: str) -> str | None:
    """$NNSERVE_CHROMIUM / $NNSERVE_FIREFOX, else Debian's binary, else one on the PATH."""
    given = os.environ.get(f"NNSERVE_{engine.upper()}")
    if given:
        return given
    found = next((p for p in CANDIDATES[engine] if os.access(p, os.X_OK)), None)
    return found or shutil.which(PACKAGES[engine])


def launch(engine: str) -> Iterator[Any]:
    executable = browser_path(engine)
    if executable is None:
        pytest.skip(f"browser tests: no {engine} found (apt-get install {PACKAGES[engine]}, or set "
                    f"NNSERVE_{engine.upper()})")
    shutil.rmtree(ARTIFACTS / engine, ignore_errors=True)  # this run's screenshots only
    with sync_playwright() as playwright:
        try:
            if engine == "chromium":
                browser = playwright.chromium.launch(executable_path=executable, args=["--disable-gpu"])
            else:  # WebDriver BiDi, which Firefox speaks itself (no patched build)
                browser = playwright.firefox.launch(executable_path=executable, channel="moz-firefox")
        except Error as error:
            pytest.skip(f"browser tests: {engine} at {executable} cannot start: {str(error).splitlines()[0]}")
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

    screenshots: int = 0

    def screenshot(self, name: str) -> None:
        folder = ARTIFACTS / self.page.context.browser.browser_type.name
        folder.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(folder / f"{name}.png"), full_page=True, caret="initial")
        self.screenshots += 1

    def errors(self) -> list[str]:
        """The page's errors, less what Playwright's screenshots caused: in Firefox each one inserts a style element
        (whatever its options), which the page's Content-Security-Policy refuses and reports, one report a shot."""
        allowed, out = self.screenshots, []
        for error in self.page_errors:
            if allowed and "blocked an inline style (style-src-elem)" in error:
                allowed -= 1
            else:
                out.append(error)
        return out

    def assert_clean(self) -> None:
        assert not self.errors(), self.errors()
        assert not self.console_errors, self.console_errors
        assert not self.failed, self.failed
        assert not [s for s in self.statuses if s[0] >= 400], self.statuses
        assert not self.dialogs, self.dialogs


def watch(page: Any) -> Watched:
    watched = Watched(page)
    page.on("console", lambda m: watched.console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: watched.page_errors.append(str(e)))
    page.on("requestfailed", lambda r: watched.failed.append(f"{r.method} {r.url}: {r.failure}"))
    page.on("request", lambda r: watched.urls.append(r.url))
    page.on("response", lambda r: watched.statuses.append((r.status, r.url)))

    def dialog(d: Any) -> None:
        watched.dialogs.append(d.message)
        d.dismiss()

    page.on("dialog", dialog)
    return watched
