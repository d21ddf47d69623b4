"""The engine's own Prometheus alerting rules, checked and unit-tested by promtool.

promtool comes from Debian's prometheus package, installed by scripts/devstack.py.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

RULES_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: run scripts/dev-stack install (Debian package prometheus)"
    return subprocess.run(
        [binary, *args], cwd=RULES_DIR, capture_output=True, text=True, timeout=120, check=False
    )


def test_rules_are_valid() -> None:
    result = promtool("check", "rules", "engagewatch-rules.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 17 rules found" in result.stdout


def test_prometheus_and_alertmanager_configs_are_valid(tmp_path: Path) -> None:
    """docker-compose's Prometheus sends what fires to its Alertmanager, which mails ops."""
    config = (RULES_DIR / "prometheus.yml").read_text()
    assert "alertmanager:9093" in config
    local = tmp_path / "prometheus.yml"  # the rules at their path here, not in the image
    local.write_text(config.replace("/etc/prometheus/", f"{RULES_DIR}/"))
    result = promtool("check", "config", str(local))
    assert result.returncode == 0, result.stdout + result.stderr
    amtool = shutil.which("amtool")
    assert amtool, "amtool is missing: run scripts/dev-stack install (prometheus-alertmanager)"
    alertmanager = RULES_DIR.parent / "alertmanager" / "alertmanager.yml"
    checked = subprocess.run(
        [amtool, "check-config", str(alertmanager)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_rules_fire_when_they_should_and_stay_quiet_otherwise() -> None:
    result = promtool("test", "rules", "engagewatch-rules.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_worker_metrics_pass_promtool_check_metrics() -> None:
    from collections import Counter

    from stream.pipeline import IngestTotals
    from stream.telemetry import EngineMetrics

    metrics = EngineMetrics()
    metrics.observe_batch(IngestTotals(valid_by_type=Counter(login=3)), 3, 0.01)
    binary = shutil.which("promtool")
    assert binary
    result = subprocess.run(
        [binary, "check", "metrics"],
        input=metrics.exposition().decode(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
