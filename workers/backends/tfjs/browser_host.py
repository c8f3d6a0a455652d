"""A headless Chromium kept warm across jobs (one per process: see TfjsSession).

Playwright objects belong to the thread and event loop that made them, while jobs
may come from any thread; so the browser lives on a private asyncio thread and
jobs are submitted to it. A job either gets a fresh browser context (`run`) or a
warm page kept per key (`run_in_page`: TF.js loaded, its backend initialised, its
WebGL shaders compiled by earlier jobs), replaced after PAGE_JOBS jobs or any
failure. Every job runs under a time limit; if the page hangs or the browser dies
the browser is restarted and the job retried once; a second failure is reported
with its reason.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import TypeVar

from playwright.async_api import Browser, BrowserContext, Page, Playwright, async_playwright
from playwright.async_api import Error as PlaywrightError

T = TypeVar("T")
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--enable-unsafe-swiftshader",
    "--use-angle=swiftshader",
    "--ignore-gpu-blocklist",
)
PAGE_JOBS = 100


class BrowserUnavailable(RuntimeError):
    """Chromium is not installed at the path given."""


class BrowserJobFailed(RuntimeError):
    """A job failed twice, with a browser restart in between, or failed in the page itself."""


class BrowserHost:
    def __init__(self, executable: Path, *, close_timeout_s: float = 10.0) -> None:
        if not executable.exists():
            raise BrowserUnavailable(f"Chromium not found at {executable}")
        self.executable = executable
        self.restarts = 0
        self.jobs_started = 0
        self._close_timeout_s = close_timeout_s
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None
        self._pages: dict[str, tuple[Page, int]] = {}
        self._page_locks: dict[str, asyncio.Lock] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, daemon=True, name="chromium-host"
        )
        self._thread.start()
        self._submit(self._launch(), timeout_s=120)
        atexit.register(self.close)

    def _submit(self, coroutine: Awaitable[T], timeout_s: float) -> T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)  # type: ignore[arg-type]
        try:
            return future.result(timeout_s)
        except FutureTimeout:
            future.cancel()
            raise

    async def _launch(self) -> None:
        if self._playwright is None:
            self._playwright = await async_playwright().start()
        self._browser = await self._playwright.chromium.launch(
            executable_path=str(self.executable), args=list(CHROMIUM_FLAGS), headless=True
        )

    async def _quietly(self, closing: Awaitable[None]) -> None:
        """Close something that may already be dead, without waiting forever for it."""
        with contextlib.suppress(PlaywrightError, TimeoutError):
            await asyncio.wait_for(closing, self._close_timeout_s)

    async def _restart(self) -> None:
        self.restarts += 1
        self._pages.clear()
        if self._browser is not None:
            await self._quietly(self._browser.close())
        await self._launch()

    async def _connected(self) -> Browser:
        if self._browser is None or not self._browser.is_connected():
            await self._restart()
        assert self._browser is not None
        return self._browser

    async def _attempt(self, job: Callable[[BrowserContext], Awaitable[T]], timeout_s: float) -> T:
        context = await (await self._connected()).new_context()
        self.jobs_started += 1
        try:
            return await asyncio.wait_for(job(context), timeout_s)
        finally:
            await self._quietly(context.close())

    async def _page_attempt(
        self, key: str, url: str, job: Callable[[Page, int], Awaitable[T]], timeout_s: float
    ) -> T:
        async with self._page_locks.setdefault(key, asyncio.Lock()):
            page, served = self._pages.pop(key, (None, 0))
            if page is None or page.is_closed() or served >= PAGE_JOBS:
                if page is not None:
                    await self._quietly(page.context.close())
                context = await (await self._connected()).new_context()
                page, served = await context.new_page(), 0
                await asyncio.wait_for(page.goto(url), timeout_s)
            self.jobs_started += 1
            try:
                result = await asyncio.wait_for(job(page, served + 1), timeout_s)
            except BaseException:
                await self._quietly(page.context.close())
                raise
            self._pages[key] = (page, served + 1)
            return result

    def _browser_died(self, error: PlaywrightError) -> bool:
        """A page error (bad model, backend that will not start) is final; a death is not."""
        message = str(error).lower()
        connected = self._browser is not None and self._browser.is_connected()
        return not connected or "has been closed" in message or "crash" in message

    async def _run(self, attempt: Callable[[], Awaitable[T]], timeout_s: float) -> T:
        try:
            return await attempt()
        except TimeoutError:
            first = f"the page did not finish within {timeout_s:.0f} s"
        except PlaywrightError as error:
            if not self._browser_died(error):
                raise BrowserJobFailed(_first_line(error)) from error
            first = f"the browser or page died ({_first_line(error)})"
        await self._restart()
        try:
            return await attempt()
        except TimeoutError as error:
            raise BrowserJobFailed(
                f"{first}; after a browser restart the page again did not "
                f"finish within {timeout_s:.0f} s"
            ) from error
        except PlaywrightError as error:
            raise BrowserJobFailed(
                f"{first}; after a browser restart: {_first_line(error)}"
            ) from error

    def run(self, job: Callable[[BrowserContext], Awaitable[T]], timeout_s: float) -> T:
        """Run `job(context)` in a fresh context, with one restart-and-retry on hang or crash."""
        attempt = functools.partial(self._attempt, job, timeout_s)
        return self._submit(self._run(attempt, timeout_s), timeout_s=3 * timeout_s + 120)

    def run_in_page(
        self, key: str, url: str, job: Callable[[Page, int], Awaitable[T]], timeout_s: float
    ) -> T:
        """Run `job(page, jobs_served)` in the warm page for `key` (opened at `url` if new),
        one job per page at a time, with the same restart-and-retry as `run`."""
        attempt = functools.partial(self._page_attempt, key, url, job, timeout_s)
        return self._submit(self._run(attempt, timeout_s), timeout_s=3 * timeout_s + 120)

    @property
    def running(self) -> bool:
        return self._loop.is_running()

    def close(self) -> None:
        """Close the browser and the Playwright driver; no Chromium process outlives this."""
        if not self.running:
            return

        async def shutdown() -> None:
            if self._browser is not None:
                await self._quietly(self._browser.close())
            if self._playwright is not None:
                await self._playwright.stop()

        try:
            self._submit(shutdown(), timeout_s=3 * self._close_timeout_s)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            atexit.unregister(self.close)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
