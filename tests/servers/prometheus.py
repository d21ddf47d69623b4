"""A real Prometheus server (Debian's ``/usr/bin/prometheus``) as a child process.

It scrapes the given targets every second and loads the given rule files, so a test can
read back through Prometheus' own HTTP API what a worker exported: proof that the
exposition, the metric names, the rules and the dashboard queries work with the real
thing and not only with a parser. Listens on 127.0.0.1; its data lives in ``workdir``.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

__all__ = ["PrometheusServer", "binary", "running_prometheus"]

JOB = "engagewatch"
START_ATTEMPTS = 3
"""A free port can be taken between choosing it and Prometheus binding it: try again."""


def binary() -> str | None:
    """The server's path, or ``None`` when the prometheus package is not installed."""
    return shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
    )


class PrometheusServer:
    """``start()``, then ``query``/``targets``/``rule_groups``; ``stop()`` at the end."""

    def __init__(
        self,
        workdir: Path,
        targets: Sequence[str],
        rule_files: Sequence[Path] = (),
        interval_s: float = 1.0,
    ) -> None:
        self.workdir = workdir
        self.targets_wanted = list(targets)
        self.rule_files = [path.resolve() for path in rule_files]
        self.interval_s = interval_s
        self.port = 0
        self.log_path = workdir / "prometheus.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_timeout_s: float = 60.0) -> None:
        found = binary()
        assert found, "prometheus is missing: scripts/dev-stack install (Debian package)"
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump(self._config(), sort_keys=False))
        for attempt in range(1, START_ATTEMPTS + 1):
            self.port = _free_port()
            with self.log_path.open("ab") as log:
                self._proc = subprocess.Popen(
                    [
                        found,
                        f"--config.file={config}",
                        f"--storage.tsdb.path={self.workdir / 'data'}",
                        f"--web.listen-address=127.0.0.1:{self.port}",
                        "--log.level=warn",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            if self._wait_ready(ready_timeout_s):
                return
            if attempt == START_ATTEMPTS or "address already in use" not in self._log_tail():
                self.stop()
                raise AssertionError(f"prometheus did not become ready:\n{self._log_tail()}")

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (Prometheus closes its TSDB cleanly), SIGKILL if it lingers."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector (raises if Prometheus refuses the query)."""
        data = self._get("/api/v1/query", {"query": expr})
        result: list[dict[str, Any]] = data["result"]
        return result

    def value(self, expr: str) -> float | None:
        """The value of a query that yields one series (``sum(...)``), ``None`` if none."""
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def targets(self) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = self._get("/api/v1/targets", {})["activeTargets"]
        return active

    def rule_groups(self) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = self._get("/api/v1/rules", {})["groups"]
        return groups

    def _config(self) -> dict[str, Any]:
        interval = f"{max(1, round(self.interval_s))}s"
        return {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [str(path) for path in self.rule_files],
            "scrape_configs": [
                {
                    "job_name": JOB,
                    "scrape_timeout": interval,
                    "static_configs": [{"targets": self.targets_wanted}],
                }
            ],
        }

    def _get(self, path: str, params: dict[str, str]) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def _wait_ready(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return True
            except OSError:
                pass  # not listening yet, or 503 while the TSDB opens
            time.sleep(0.2)
        return False

    def _log_tail(self) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-3000:]


@contextmanager
def running_prometheus(
    workdir: Path, targets: Sequence[str], rule_files: Sequence[Path] = ()
) -> Iterator[PrometheusServer]:
    server = PrometheusServer(workdir, targets, rule_files)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
