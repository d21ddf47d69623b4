"""The real Prometheus Alertmanager (Debian's binary) and a webhook that records its output.

:class:`Alertmanager` runs ``prometheus-alertmanager`` on 127.0.0.1 with clustering off,
its state in a temporary directory and a config whose only route sends every group to
a :class:`NotificationReceiver` with ``group_wait``/``group_interval`` of 1s, so a test
sees firing and resolved notifications within seconds. Skips the test (with the reason)
only when the binary is not installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import free_port
from tests.servers import record, serve

__all__ = ["Alertmanager", "NotificationReceiver"]

BINARY = "prometheus-alertmanager"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0

CONFIG = """\
route:
  receiver: engagewatch-test
  group_by: [alertname, account_id]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: engagewatch-test
    webhook_configs:
      - url: {webhook_url}
        send_resolved: true
"""

Notification = dict[str, Any]


class NotificationReceiver:
    """Records Alertmanager's webhook notifications (payload ``version: "4"``)."""

    def __init__(self) -> None:
        self.notifications: list[Notification] = []
        self.url = ""
        self._changed = asyncio.Condition()
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/alertmanager", self._receive)
        self.url = f"{await self._stack.enter_async_context(serve(app))}/alertmanager"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    async def wait_for(
        self, matches: Callable[[Notification], bool], timeout_s: float, what: str
    ) -> Notification:
        """The first notification ``matches`` accepts, waiting at most ``timeout_s``."""

        def found() -> Notification | None:
            return next((n for n in self.notifications if matches(n)), None)

        try:
            async with asyncio.timeout(timeout_s), self._changed:
                await self._changed.wait_for(lambda: found() is not None)
        except TimeoutError:
            raise AssertionError(
                f"no {what} within {timeout_s:g}s; received {self.notifications!r}"
            ) from None
        notification = found()
        assert notification is not None
        return notification

    async def _receive(self, request: web.Request) -> web.StreamResponse:
        received = await record(request)
        async with self._changed:
            self.notifications.append(received.json())
            self._changed.notify_all()
        return web.Response(status=200)


class Alertmanager:
    """``async with Alertmanager(tmp_path, webhook_url) as am``: the API at ``am.url``."""

    def __init__(self, directory: Path, webhook_url: str) -> None:
        self.directory = directory
        self.webhook_url = webhook_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = directory / "alertmanager.log"
        self._process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Self:
        binary = shutil.which(BINARY) or shutil.which(BINARY, path="/usr/bin")
        if binary is None:
            pytest.skip(f"{BINARY} is not installed (Debian package prometheus-alertmanager)")
        config = self.directory / "alertmanager.yml"
        config.write_text(CONFIG.format(webhook_url=self.webhook_url))
        (self.directory / "data").mkdir(exist_ok=True)
        with self.log_path.open("wb") as log:
            self._process = await asyncio.create_subprocess_exec(
                binary,
                f"--config.file={config}",
                f"--storage.path={self.directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",  # empty: no gossip, no second port
                "--log.level=debug",
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )
        try:
            await self._wait_ready()
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        timeout = aiohttp.ClientTimeout(total=2.0)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while time.monotonic() < deadline:
                assert self._process is not None
                if self._process.returncode is not None:
                    raise AssertionError(f"alertmanager exited early:\n{self.log()}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(f"{self.url}/-/ready") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise AssertionError(f"alertmanager not ready after {READY_TIMEOUT_S:g}s:\n{self.log()}")

    async def _stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await process.wait()
