"""config/receivers.yaml: strict loading, errors with file:line:field, secrets kept out."""

from __future__ import annotations

from pathlib import Path

import pytest

from alerts.delivery.config import (
    DEFAULT_RECEIVERS,
    EmailReceiver,
    SlackWebhookReceiver,
    load_receivers,
)
from alerts.delivery.routing import receivers_for
from config.yaml_source import ConfigError

SECRET = "https://hooks.slack.com/services/T000/B000/very-secret-token"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "receivers.yaml"
    path.write_text(text)
    return path


def test_the_shipped_file_loads_and_routes_everything_to_the_log() -> None:
    config = load_receivers(DEFAULT_RECEIVERS)
    assert [r.name for r in config.receivers] == ["log"]
    assert receivers_for(config.route, {"severity": "critical"}) == ["log"]


def test_secrets_come_from_the_environment_and_stay_masked(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
receivers:
  - name: team
    type: slack_webhook
    url: {env: SLACK_URL}
route: {receiver: team}
""",
    )
    config = load_receivers(path, environ={"SLACK_URL": SECRET})
    receiver = config.receiver("team")
    assert isinstance(receiver, SlackWebhookReceiver)
    assert receiver.url.get_secret_value() == SECRET
    assert SECRET not in repr(config)
    assert SECRET not in str(receiver)


def test_secrets_come_from_files(tmp_path: Path) -> None:
    secret_file = tmp_path / "smtp-password"
    secret_file.write_text("hunter2\n")
    path = write(
        tmp_path,
        f"""
receivers:
  - name: mail
    type: email
    smtp: {{host: 127.0.0.1, port: 2525, username: ew, password: {{file: {secret_file}}}}}
    from: ew@example.com
route: {{receiver: mail}}
""",
    )
    receiver = load_receivers(path, environ={}).receiver("mail")
    assert isinstance(receiver, EmailReceiver)
    assert receiver.smtp.password is not None
    assert receiver.smtp.password.get_secret_value() == "hunter2"
    assert receiver.to == ("owner",)


def test_a_missing_secret_variable_names_file_line_and_variable(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """receivers:
  - name: team
    type: slack_webhook
    url: {env: SLACK_URL}
route: {receiver: team}
""",
    )
    with pytest.raises(ConfigError) as error:
        load_receivers(path, environ={})
    assert f"{path}:4: receivers.0.url: environment variable SLACK_URL is not set" in str(
        error.value
    )


def test_a_route_to_an_unknown_receiver_is_refused_at_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """receivers:
  - {name: log, type: log}
route:
  receiver: log
  routes:
    - match: {severity: critical}
      receiver: pager
""",
    )
    with pytest.raises(ConfigError) as error:
        load_receivers(path)
    message = str(error.value)
    assert f"{path}:7: route.routes.0.receiver: no receiver named 'pager'" in message


@pytest.mark.parametrize(
    ("body", "line", "field", "says"),
    [
        (
            "receivers:\n  - {name: log, type: log, colour: red}\nroute: {receiver: log}\n",
            2,
            "receivers.0.colour",
            "Extra inputs",
        ),
        (
            "receivers:\n  - {name: Log!, type: log}\nroute: {receiver: log}\n",
            2,
            "receivers.0.name",
            "lower-case",
        ),
        (
            "receivers:\n  - name: x\n    type: carrier_pigeon\nroute: {receiver: x}\n",
            2,
            "receivers.0",
            "type",
        ),
        (
            "receivers:\n  - name: m\n    type: email\n    smtp: {host: h}\n    from: a@b\n"
            "    to: [nobody]\nroute: {receiver: m}\n",
            6,
            "receivers.0.to",
            "neither",
        ),
        (
            "receivers:\n  - name: l\n    type: log\n    quiet_hours: {start: '22:00',"
            " end: '07:00', timezone: Mars/Olympus}\nroute: {receiver: l}\n",
            4,
            "receivers.0.quiet_hours.timezone",
            "unknown IANA timezone",
        ),
        (
            "receivers:\n  - name: l\n    type: log\n    retry: {initial: soon}\n"
            "route: {receiver: l}\n",
            4,
            "receivers.0.retry.initial",
            "duration",
        ),
        (
            "receivers:\n  - name: m\n    type: email\n    from: a@b\n    smtp:\n"
            "      host: h\n      ca_file: /nonexistent/ca.pem\nroute: {receiver: m}\n",
            7,
            "receivers.0.smtp.ca_file",
            "cannot load the CA bundle '/nonexistent/ca.pem': No such file",
        ),
    ],
)
def test_bad_files_fail_with_file_line_and_field(
    tmp_path: Path, body: str, line: int, field: str, says: str
) -> None:
    path = write(tmp_path, body)
    with pytest.raises(ConfigError) as error:
        load_receivers(path)
    message = str(error.value)
    assert f"{path}:{line}: {field}" in message, message
    assert says in message


def test_duplicate_names_and_a_missing_default_are_refused(tmp_path: Path) -> None:
    twice = write(
        tmp_path,
        "receivers:\n  - {name: a, type: log}\n  - {name: a, type: log}\nroute: {receiver: a}\n",
    )
    with pytest.raises(ConfigError, match="unique: a"):
        load_receivers(twice)
    no_default = write(tmp_path, "receivers:\n  - {name: a, type: log}\nroute: {}\n")
    with pytest.raises(ConfigError, match="needs a receiver"):
        load_receivers(no_default)


def test_quiet_every_day_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "receivers:\n  - name: l\n    type: log\n    quiet_hours: {start: '20:00', end: '08:00',"
        "\n      all_day: [0, 1, 2, 3, 4, 5, 6]}\nroute: {receiver: l}\n",
    )
    with pytest.raises(ConfigError, match="every day"):
        load_receivers(path)


def test_on_call_receivers_take_no_digest(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "receivers:\n  - name: pd\n    type: pagerduty\n    routing_key: abc\n"
        "    digest: {interval: 1h}\nroute: {receiver: pd}\n",
    )
    with pytest.raises(ConfigError, match="take no digest"):
        load_receivers(path)
