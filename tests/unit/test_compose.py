"""docker-compose.yml cannot run here (no Docker engine), so check it as data.

The README promises services and ports; these tests keep the two files in step and
every image pinned to a version.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
SERVICES = {
    "kafka",
    "redis",
    "worker",
    "simulator",
    "prometheus",
    "alertmanager",
    "grafana",
    "mailpit",
}


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return data


def published_ports(service: dict[str, Any]) -> set[int]:
    ports = set()
    for mapping in service.get("ports", []):
        # "127.0.0.1:9092:9092" or "9092:9092": the host port is second from last.
        ports.add(int(str(mapping).split(":")[-2]))
    return ports


def test_compose_defines_the_services_the_readme_names() -> None:
    services = compose()["services"]
    assert set(services) == SERVICES
    readme = (REPO / "README.md").read_text()
    for name in SERVICES:
        assert f"`{name}`" in readme, f"README does not mention the {name} service"


def test_every_port_the_readme_mentions_is_published() -> None:
    services = compose()["services"]
    published = set().union(*(published_ports(s) for s in services.values()))
    readme = (REPO / "README.md").read_text()
    mentioned = {int(port) for port in re.findall(r"localhost:(\d{2,5})", readme)}
    assert mentioned, "README names no localhost ports"
    assert mentioned <= published, f"README ports not published: {mentioned - published}"


def test_images_are_pinned_and_engine_services_build_from_the_repo() -> None:
    services = compose()["services"]
    for name, service in services.items():
        if "image" in service:
            image = service["image"]
            assert re.search(r":v?\d+\.\d+", image), f"{name}: image {image} is not pinned"
        else:
            assert service.get("build") == ".", f"{name}: neither an image nor the repo build"
    assert (REPO / "Dockerfile").exists()


def test_engine_services_reach_kafka_and_redis_by_service_name() -> None:
    services = compose()["services"]
    for name in ("worker", "simulator"):
        env = services[name]["environment"]
        assert env["ENGAGEWATCH_KAFKA_BOOTSTRAP"].startswith("kafka:")
        assert env["ENGAGEWATCH_REDIS_URL"].startswith("redis://redis:")
    kafka_env = services["kafka"]["environment"]
    assert "broker,controller" in kafka_env["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper


def test_mounted_config_files_exist() -> None:
    for service in compose()["services"].values():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{source} is mounted but missing"
