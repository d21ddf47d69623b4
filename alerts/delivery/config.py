"""Receivers and routing as configuration: the models behind config/receivers.yaml.

Loaded strictly, like the rules: an unknown key, a wrong type, a route naming a
receiver that does not exist, or a secret whose variable or file is missing stops the
start with the file, line and field (docs/delivery.md).

Secrets (webhook URLs, tokens, passwords, routing keys) are written as
``{env: NAME}`` or ``{file: /run/secrets/x}`` and resolved at load into pydantic
``SecretStr``, whose ``repr`` and ``str`` are masked; error messages name the variable
or file, never the value.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Mapping
from datetime import time
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from alerts.rules import parse_duration_s
from config.yaml_source import ConfigError, load_yaml_mapping, locate

__all__ = [
    "DEFAULT_RECEIVERS",
    "DeliveryConfig",
    "Digest",
    "QuietHours",
    "Receiver",
    "RetryPolicy",
    "Route",
    "load_receivers",
]

DEFAULT_RECEIVERS = Path(__file__).resolve().parent.parent.parent / "config" / "receivers.yaml"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")

Seconds = Annotated[float, BeforeValidator(parse_duration_s), Field(ge=0)]
PositiveSeconds = Annotated[float, BeforeValidator(parse_duration_s), Field(gt=0)]
Severity = Literal["info", "warning", "critical"]


def _resolve_secret(value: Any, info: ValidationInfo) -> Any:
    """``{env: NAME}`` or ``{file: PATH}`` -> the secret's text; a plain string stays
    (allowed for local testing; docs/delivery.md says why not to)."""
    if not isinstance(value, Mapping):
        return value
    if set(value) == {"env"}:
        environ: Mapping[str, str] = (info.context or {}).get("environ", os.environ)
        name = str(value["env"])
        if not environ.get(name):
            raise ValueError(f"environment variable {name} is not set")
        return environ[name]
    if set(value) == {"file"}:
        path = Path(str(value["file"]))
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"cannot read secret file {path}: {exc.strerror}") from None
    raise ValueError("a secret is written as {env: NAME} or {file: PATH}")


Secret = Annotated[SecretStr, BeforeValidator(_resolve_secret)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class RetryPolicy(_Strict):
    """Exponential backoff with jitter between attempts; a delivery that has failed for
    ``give_up_after`` or ``max_attempts`` times goes to the alerts dead-letter topic."""

    initial: PositiveSeconds = 2.0
    max: PositiveSeconds = 300.0
    multiplier: Annotated[float, Field(ge=1)] = 2.0
    jitter: Annotated[float, Field(ge=0, le=1)] = 0.2
    """Each delay is drawn from [delay * (1 - jitter), delay]: workers that failed
    together do not retry together."""
    max_attempts: Annotated[int, Field(gt=0, le=1000)] = 20
    give_up_after: PositiveSeconds = 86_400.0


class QuietHours(_Strict):
    """A daily window, in the receiver's timezone, in which non-critical messages wait."""

    start: time
    end: time
    timezone: str = "UTC"
    weekdays: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6)
    """Days (Monday = 0) whose quiet window *starts* on them; weekends may be all quiet
    by listing them in ``all_day``."""
    all_day: tuple[int, ...] = ()
    """Days (Monday = 0) that are quiet from midnight to midnight."""
    deliver_severities: tuple[Severity, ...] = ("critical",)
    """Severities delivered at once even inside quiet hours."""

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA timezone {value!r}") from None
        return value

    @field_validator("weekdays", "all_day")
    @classmethod
    def _check_days(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(day not in range(7) for day in value):
            raise ValueError("days are 0 (Monday) to 6 (Sunday)")
        return value

    @model_validator(mode="after")
    def _some_time_is_not_quiet(self) -> QuietHours:
        if len(set(self.all_day)) == 7:
            raise ValueError("all_day covers every day: only deliver_severities would ever go")
        return self


class Digest(_Strict):
    """Group a receiver's messages into one per ``group_by`` target every ``interval``."""

    interval: PositiveSeconds = 3600.0
    group_by: Literal["owner", "channel", "receiver"] = "owner"
    deliver_severities: tuple[Severity, ...] = ("critical",)
    """Severities sent at once, outside the digest."""


class _ReceiverBase(_Strict):
    name: str
    timeout: PositiveSeconds = 10.0
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    rate_per_s: Annotated[float, Field(gt=0)] = 5.0
    """Messages per second to this receiver (Slack webhooks allow about one)."""
    quiet_hours: QuietHours | None = None
    digest: Digest | None = None
    send_resolved: bool = True
    max_age: PositiveSeconds = 86_400.0
    """Alerts judged longer ago than this are old news: a worker catching up on history
    or back from an outage publishes them in a burst. Their reminders (repeats) are not
    sent, and their firing messages wait ``catch_up_wait`` first, so that an episode
    that ended meanwhile (its resolved event follows in the burst) pages nobody, while
    one still open is told."""
    catch_up_wait: Seconds = 120.0

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("use lower-case letters, digits, '-' or '_' (at most 63)")
        return value


class SlackWebhookReceiver(_ReceiverBase):
    type: Literal["slack_webhook"]
    url: Secret
    rate_per_s: Annotated[float, Field(gt=0)] = 1.0


class SlackBotReceiver(_ReceiverBase):
    type: Literal["slack_bot"]
    token: Secret
    channel: str = "account"
    """``account``: the account's ``slack_channel`` from its metadata; or a channel."""
    fallback_channel: str | None = None
    """Where alerts of accounts without a channel go; without it they are dead-lettered."""
    api_base: str = "https://slack.com/api"
    rate_per_s: Annotated[float, Field(gt=0)] = 1.0


class SmtpServer(_Strict):
    host: str
    port: Annotated[int, Field(ge=1, le=65_535)] = 587
    username: str | None = None
    password: Secret | None = None
    security: Literal["starttls", "tls", "none"] = "starttls"
    ca_file: str | None = None
    """A CA bundle to trust for this server (a private CA); default: the system's."""

    @field_validator("ca_file")
    @classmethod
    def _loadable(cls, value: str | None) -> str | None:
        """Loaded once here, so a missing or broken bundle stops ``check`` and the
        start with this field's line, not the worker with a traceback."""
        if value is not None:
            try:
                ssl.create_default_context(cafile=value)
            except ssl.SSLError as exc:
                raise ValueError(f"cannot load the CA bundle {value!r}: {exc.reason}") from None
            except OSError as exc:
                reason = exc.strerror or str(exc)
                raise ValueError(f"cannot load the CA bundle {value!r}: {reason}") from None
        return value


class EmailReceiver(_ReceiverBase):
    type: Literal["email"]
    smtp: SmtpServer
    from_: str = Field(alias="from")
    to: tuple[str, ...] = ("owner",)
    """Addresses; ``owner`` stands for the account owner's e-mail from its metadata."""

    @field_validator("to")
    @classmethod
    def _check_to(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one recipient (an address, or owner)")
        for item in value:
            if item != "owner" and "@" not in item:
                raise ValueError(f"{item!r} is neither an e-mail address nor owner")
        return value


class AlertmanagerReceiver(_ReceiverBase):
    type: Literal["alertmanager"]
    url: str
    """Alertmanager's base URL; alerts are posted to ``<url>/api/v2/alerts``."""
    bearer_token: Secret | None = None
    rate_per_s: Annotated[float, Field(gt=0)] = 20.0
    firing_ends_after: PositiveSeconds = 8 * 86_400.0
    """``endsAt`` given to a firing alert: Alertmanager resolves an alert nobody re-posts
    by then. Keep it above your rules' ``repeat_interval`` (each repeat re-posts)."""


class PagerDutyReceiver(_ReceiverBase):
    type: Literal["pagerduty"]
    routing_key: Secret
    url: str = "https://events.pagerduty.com/v2/enqueue"


class WebhookReceiver(_ReceiverBase):
    type: Literal["webhook"]
    url: Secret
    secret: Secret
    """HMAC-SHA256 key; the receiver checks ``X-Engagewatch-Signature`` with it."""


class LogReceiver(_ReceiverBase):
    """Writes each alert to the worker's log: the default, and handy while setting up."""

    type: Literal["log"]


Receiver = Annotated[
    SlackWebhookReceiver
    | SlackBotReceiver
    | EmailReceiver
    | AlertmanagerReceiver
    | PagerDutyReceiver
    | WebhookReceiver
    | LogReceiver,
    Field(discriminator="type"),
]


class Route(_Strict):
    """A node of the routing tree, as in Alertmanager: an alert goes down the first
    child whose matchers all hold (and on to later siblings while ``continue`` is
    set); where no child matches, the node's own receiver takes it."""

    receiver: str | None = None
    match: dict[str, str] = Field(default_factory=dict)
    match_re: dict[str, re.Pattern[str]] = Field(default_factory=dict)
    continue_: bool = Field(default=False, alias="continue")
    routes: tuple[Route, ...] = ()

    @field_validator("match_re", mode="before")
    @classmethod
    def _anchor(cls, value: Any) -> Any:
        """Anchored like Alertmanager's: ``champion-.*`` must match the whole value."""
        if isinstance(value, Mapping):
            return {key: f"^(?:{pattern})$" for key, pattern in value.items()}
        return value


class DeliveryConfig(_Strict):
    receivers: tuple[Receiver, ...]
    route: Route

    @model_validator(mode="after")
    def _check_names(self) -> DeliveryConfig:
        names = [receiver.name for receiver in self.receivers]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"receiver names must be unique: {', '.join(duplicates)}")
        if self.route.receiver is None:
            raise ValueError("route: the top route needs a receiver (the default)")
        for receiver in self.receivers:
            if receiver.digest is not None and receiver.type in ("alertmanager", "pagerduty"):
                raise ValueError(f"{receiver.name}: on-call receivers take no digest")
        return self

    def receiver(self, name: str) -> Receiver:
        for receiver in self.receivers:
            if receiver.name == name:
                return receiver
        raise KeyError(name)


def load_receivers(path: Path, environ: Mapping[str, str] | None = None) -> DeliveryConfig:
    """Load and validate a receivers file; errors name the file, line and field."""
    data = load_yaml_mapping(path)
    context = {"environ": os.environ if environ is None else environ}
    try:
        config = DeliveryConfig.model_validate(data, context=context)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            loc = _field_path(error["loc"])
            where = locate(path, loc, at_key=error["type"] == "extra_forbidden")
            field = ".".join(str(part) for part in loc)
            message = error["msg"].removeprefix("Value error, ")
            lines.append(f"{where}: {field}: {message}")
        raise ConfigError("invalid receivers:\n  " + "\n  ".join(lines)) from None
    _check_route_receivers(config, path)
    return config


def _field_path(loc: tuple[int | str, ...]) -> list[int | str]:
    """Without pydantic's union tag: ``receivers.0.slack_webhook.url`` is ``receivers.0.url``."""
    path = list(loc)
    tags = ("webhook", "bot", "email", "alertmanager", "pagerduty", "log")
    if (
        len(path) >= 3
        and path[0] == "receivers"
        and isinstance(path[2], str)
        and path[2].endswith(tags)
    ):
        del path[2]
    return path


def _check_route_receivers(config: DeliveryConfig, path: Path) -> None:
    known = {receiver.name for receiver in config.receivers}

    def walk(route: Route, loc: list[int | str]) -> None:
        if route.receiver is not None and route.receiver not in known:
            where = locate(path, [*loc, "receiver"])
            field = ".".join(str(part) for part in [*loc, "receiver"])
            raise ConfigError(
                f"invalid receivers:\n  {where}: {field}: no receiver named "
                f"{route.receiver!r} (known: {', '.join(sorted(known))})"
            )
        for index, child in enumerate(route.routes):
            walk(child, [*loc, "routes", index])

    walk(config.route, ["route"])
