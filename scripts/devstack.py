"""Local infrastructure for development and tests: a real Kafka (KRaft) and Redis.

Used by ``scripts/dev-stack`` and by the pytest session fixtures, so a developer, the
demo and CI all run the same servers the same way:

* Kafka jars come from Maven Central (``scripts/kafka/pom.xml``) into a cache outside
  the repository, once; storage is formatted with Kafka's own StorageTool; the broker
  runs as one combined broker+controller on 127.0.0.1 on a free port and counts as up
  only when a real metadata request succeeds.
* Redis is Debian's ``redis-server`` (installed with apt-get when missing), on
  127.0.0.1, persisting nothing.

Everything a stack writes (config, data, logs, pids) lives in one state directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from base64 import urlsafe_b64encode
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["Stack", "StackError", "down", "install", "status", "up"]

REPO = Path(__file__).resolve().parent.parent
POM = REPO / "scripts" / "kafka" / "pom.xml"
CACHE = Path(os.environ.get("ENGAGEWATCH_CACHE_DIR", Path.home() / ".cache" / "engagewatch"))
DEFAULT_STATE = REPO / ".dev-stack"
KAFKA_HEAP = os.environ.get("ENGAGEWATCH_KAFKA_HEAP", "-Xms256m -Xmx768m")
READY_TIMEOUT_S = 90.0
DEBIAN_TOOLS = (
    ("redis-server", "redis-server"),
    ("promtool", "prometheus"),
    ("prometheus", "prometheus"),
    ("prometheus-alertmanager", "prometheus-alertmanager"),
    ("chromium", "chromium"),
)


class StackError(RuntimeError):
    """Something the stack needs is missing or failed; the message says what to do."""


@dataclass
class Stack:
    """A running stack, as written to ``<state>/stack.json``."""

    state_dir: str
    kafka_port: int
    controller_port: int
    redis_port: int
    kafka_pid: int
    redis_pid: int

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def env(self) -> dict[str, str]:
        return {
            "ENGAGEWATCH_KAFKA_BOOTSTRAP": self.bootstrap,
            "ENGAGEWATCH_REDIS_URL": self.redis_url,
        }


# --- install -----------------------------------------------------------------------


def kafka_version() -> str:
    match = re.search(r"<kafka.version>([^<]+)</kafka.version>", POM.read_text())
    if not match:
        raise StackError(f"{POM}: no <kafka.version> property")
    return match.group(1)


def kafka_libs() -> Path:
    return CACHE / f"kafka-{kafka_version()}" / "libs"


def install() -> None:
    """Fetch the Kafka jars (once) and make sure redis-server exists."""
    _require_java()
    libs = kafka_libs()
    if not (libs / f"kafka_2.13-{kafka_version()}.jar").exists():
        if shutil.which("mvn") is None:
            raise StackError(
                "Maven (mvn) is needed once to fetch the Kafka jars from Maven Central; "
                "install it (apt-get install maven) and run again."
            )
        print(f"dev-stack: fetching Kafka {kafka_version()} jars into {libs} ...", flush=True)
        partial = libs.with_name("libs.partial")
        shutil.rmtree(partial, ignore_errors=True)
        _run(
            [
                "mvn",
                "-q",
                "-B",
                "-f",
                str(POM),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={partial}",
                "-DincludeScope=runtime",
            ],
            "fetching Kafka jars",
        )
        partial.rename(libs)
    # Debian packages the stack and the tests run: redis-server; prometheus (the server
    # and promtool) for the engine's own metrics and alerting rules; Alertmanager, a real
    # receiver of our alerts; Chromium for the triage page test.
    missing = list(dict.fromkeys(pkg for binary, pkg in DEBIAN_TOOLS if not shutil.which(binary)))
    if missing:
        _install_debian(missing)


def _require_java() -> None:
    if shutil.which("java") is None:
        raise StackError(
            "Java 17 or newer is needed to run Kafka; install a JDK "
            "(Debian: apt-get install openjdk-17-jre-headless)."
        )
    out = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr
    match = re.search(r'version "(\d+)', out)
    if match and int(match.group(1)) < 17:
        raise StackError(f"Kafka 4 needs Java 17 or newer; found: {out.splitlines()[0]}")


def _install_debian(packages: list[str]) -> None:
    names = " ".join(packages)
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise StackError(
            f"missing: {names}. Install them with your package manager "
            f"(Debian: apt-get install {names})."
        )
    print(f"dev-stack: installing {names} with apt-get ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "update", "-q"], "apt-get update", env)
    _run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
        f"installing {names}",
        env,
    )
    # Debian may start system-wide services; ours run on free ports, they may stay.


def _run(cmd: list[str], what: str, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
        raise StackError(f"{what} failed (exit {result.returncode}):\n{tail}")


# --- up / down / status ------------------------------------------------------------


def up(state_dir: Path = DEFAULT_STATE) -> Stack:
    """Start Kafka and Redis on free ports; return once both answer real requests."""
    existing = status(state_dir)
    if existing is not None:
        return existing
    install()
    if (state_dir / "stack.json").exists():  # one of them died: the other stops too
        down(state_dir)
    shutil.rmtree(state_dir, ignore_errors=True)
    (state_dir / "logs").mkdir(parents=True)
    kafka_port, controller_port, redis_port = _free_ports(3)
    redis_pid = _start_redis(state_dir, redis_port)
    try:
        kafka_pid = _start_kafka(state_dir, kafka_port, controller_port)
    except BaseException:
        _stop_pid(redis_pid)
        raise
    stack = Stack(str(state_dir), kafka_port, controller_port, redis_port, kafka_pid, redis_pid)
    (state_dir / "stack.json").write_text(json.dumps(asdict(stack), indent=2))
    (state_dir / "stack.env").write_text(
        "".join(f"export {k}={v}\n" for k, v in stack.env().items())
    )
    return stack


def status(state_dir: Path = DEFAULT_STATE) -> Stack | None:
    """The stack recorded in ``state_dir`` if both of its processes still run."""
    record = state_dir / "stack.json"
    if not record.exists():
        return None
    stack = Stack(**json.loads(record.read_text()))
    if _alive(stack.kafka_pid) and _alive(stack.redis_pid):
        return stack
    return None


def down(state_dir: Path = DEFAULT_STATE, keep_data: bool = False) -> bool:
    """Stop both servers (TERM, then KILL after a grace period) and remove the data.
    False: no stack was recorded there, so nothing was stopped."""
    record = state_dir / "stack.json"
    recorded = record.exists()
    if recorded:
        stack = Stack(**json.loads(record.read_text()))
        _stop_pid(stack.kafka_pid)
        _stop_pid(stack.redis_pid)
        record.unlink()
    if not keep_data:
        for part in ("kafka-data", "redis-data"):
            shutil.rmtree(state_dir / part, ignore_errors=True)
    return recorded


def _start_redis(state_dir: Path, port: int) -> int:
    data = state_dir / "redis-data"
    data.mkdir()
    log = open(state_dir / "logs" / "redis.log", "ab")  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(data),
            "--protected-mode",
            "yes",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(
                f"redis-server exited at start; see {state_dir / 'logs' / 'redis.log'}"
            )
        if _redis_ping(port):
            return proc.pid
        time.sleep(0.05)
    _stop_pid(proc.pid)
    raise StackError("redis-server did not answer PING within 20 s")


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _start_kafka(state_dir: Path, port: int, controller_port: int) -> int:
    config = _write_kafka_config(state_dir, port, controller_port)
    classpath = f"{kafka_libs()}/*"
    log4j = REPO / "scripts" / "kafka" / "log4j2.properties"
    java = [
        "java",
        *KAFKA_HEAP.split(),
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log4j}",
        f"-Dkafka.logs.dir={state_dir / 'logs'}",
        "-cp",
        classpath,
    ]
    cluster_id = urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    _run(
        [
            *java,
            "kafka.tools.StorageTool",
            "format",
            f"--cluster-id={cluster_id}",
            "-c",
            str(config),
        ],
        "formatting Kafka storage",
    )
    log = open(state_dir / "logs" / "kafka.out", "ab")  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen(
        [*java, "kafka.Kafka", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_for_kafka(proc, port, state_dir)
    except BaseException:
        _stop_pid(proc.pid)
        raise
    return proc.pid


def _write_kafka_config(state_dir: Path, port: int, controller_port: int) -> Path:
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(state_dir / "kafka-data"),
        "num.partitions": "8",
        # A single node: internal topics cannot have more replicas than brokers.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        # Tests start and stop consumers all the time; do not wait for more joiners.
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "true",
        "log.segment.bytes": str(64 * 1024 * 1024),
    }
    path = state_dir / "server.properties"
    path.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    return path


def _wait_for_kafka(proc: subprocess.Popen[bytes], port: int, state_dir: Path) -> None:
    """Ready means a metadata request answered, not merely an open port."""
    from kafka.admin import KafkaAdminClient

    deadline = time.monotonic() + READY_TIMEOUT_S
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(
                f"Kafka exited at start (code {proc.returncode}); see {state_dir / 'logs'}"
            )
        try:
            admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}", request_timeout_ms=3000)
            try:
                admin.describe_cluster()
                return
            finally:
                admin.close()
        except Exception as exc:  # any failure just means "not yet"
            last_error = exc
            time.sleep(0.5)
    raise StackError(
        f"Kafka did not answer a metadata request in {READY_TIMEOUT_S:.0f} s: {last_error}"
    )


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie (exited, not reaped) still answers kill(0)
        return "Z" not in Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return True


def _stop_pid(pid: int, grace_s: float = 20.0) -> None:
    if not _alive(pid):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except OSError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)


# --- command line ------------------------------------------------------------------


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="dev-stack", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["install", "up", "down", "status", "env"])
    parser.add_argument(
        "--dir", type=Path, default=DEFAULT_STATE, help="state directory (default: .dev-stack)"
    )
    parser.add_argument("--keep-data", action="store_true", help="down: keep Kafka and Redis data")
    args = parser.parse_args(argv)
    try:
        if args.command == "install":
            install()
            print(
                f"dev-stack: Kafka {kafka_version()} jars in {kafka_libs()}; "
                f"redis-server at {shutil.which('redis-server')}; "
                f"promtool at {shutil.which('promtool')}"
            )
        elif args.command == "up":
            stack = up(args.dir)
            print(
                f"dev-stack: Kafka on {stack.bootstrap}, Redis on {stack.redis_url}; "
                f"logs in {args.dir / 'logs'}"
            )
            print(f"dev-stack: to use it: source {args.dir / 'stack.env'}")
        elif args.command == "down":
            stopped = down(args.dir, keep_data=args.keep_data)
            print("dev-stack: stopped" if stopped else f"dev-stack: nothing ran in {args.dir}")
        elif args.command in ("status", "env"):
            running = status(args.dir)
            if running is None:
                print("dev-stack: not running" if args.command == "status" else "", file=sys.stderr)
                return 1
            if args.command == "env":
                print("".join(f"export {k}={v}\n" for k, v in running.env().items()), end="")
            else:
                print(
                    f"dev-stack: Kafka on {running.bootstrap} (pid {running.kafka_pid}), "
                    f"Redis on {running.redis_url} (pid {running.redis_pid})"
                )
    except StackError as exc:
        print(f"dev-stack: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
