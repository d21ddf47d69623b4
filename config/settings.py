"""Engine settings: one YAML file plus ``ENGAGEWATCH_*`` environment variables.

Precedence, lowest first: built-in defaults, the YAML file (``--config`` or
``ENGAGEWATCH_CONFIG``), then environment variables. Everything is validated once at
start; a bad value fails with the file, line and setting name, or the variable name.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from config.yaml_source import ConfigError, load_yaml_mapping, locate

__all__ = ["ENV_PREFIX", "ConfigError", "Settings", "load_settings"]

ENV_PREFIX = "ENGAGEWATCH_"
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
_HOST_PORT = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")

PositiveInt = Annotated[int, Field(gt=0)]
PositiveSeconds = Annotated[float, Field(gt=0)]


class Settings(BaseModel):
    """Everything the worker and the CLI need to know, validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kafka_bootstrap: str = "127.0.0.1:9092"
    """Comma-separated ``host:port`` list of Kafka brokers."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    topic_prefix: str = "engagewatch"
    """Prefix of every topic name: ``<prefix>.events``, ``<prefix>.events.dlq``..."""
    partitions: Annotated[int, Field(gt=0, le=10_000)] = 8
    """Partition count shared by every per-account topic (they must be co-partitioned)."""
    replication_factor: Annotated[int, Field(gt=0, le=10)] = 1
    app_id: str = "engagewatch"
    """Kafka consumer group and Faust application id; also names table changelogs."""
    table_store: str = "memory://"
    """``memory://`` (development) or ``rocksdb://`` (production, state larger than RAM)."""
    data_dir: str = ".engagewatch-data"
    web_host: str = "127.0.0.1"
    web_port: Annotated[int, Field(ge=1, le=65_535)] = 6066
    """Port of the worker's HTTP server (Faust web: health, and later metrics and APIs)."""
    advertised_url: str | None = None
    """How other workers reach this one's web server (read API routing); default
    ``http://<web_host>:<web_port>``. Set it when binding to 0.0.0.0 (containers)."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    max_event_bytes: PositiveInt = 64 * 1024
    """Events larger than this go to the dead-letter topic as ``too_large``."""
    future_skew_s: Annotated[float, Field(ge=0)] = 300.0
    """How far in the future ``occurred_at`` may be before ``future_timestamp``."""
    stakeholder_roles: tuple[str, ...] = ("champion", "admin", "executive")

    horizon_days: Annotated[int, Field(ge=7, le=400)] = 44
    """Days of daily buckets kept per account (event time)."""
    allowed_lateness_s: Annotated[float, Field(ge=0)] = 3 * 86_400.0
    """Events older than an account's newest event minus this go to the dead letters as late."""
    dedup_capacity: PositiveInt = 20_000
    """Event ids remembered per account for duplicate detection (within the lateness)."""
    exact_user_limit: PositiveInt = 50_000
    """Distinct users per account counted exactly; beyond it counts are a lower bound."""
    features_per_day: PositiveInt = 200
    """Distinct feature names kept per account and day; a day's later new names are
    counted together as ``(other)`` (names the rules judge are always kept), so a
    producer sending ids as feature names cannot grow the state without bound."""
    decoded_states: Annotated[int, Field(ge=0)] = 10_000
    """Accounts whose state a worker keeps decoded between batches (the most recent):
    each costs three to five times its JSON in memory (docs/state.md), so a worker of
    many busy accounts may want fewer; 0 decodes every state at every batch."""
    max_state_bytes: Annotated[int, Field(ge=1 << 20)] = 16 << 20
    """Largest table record the worker writes (an account's state is one), for the
    producer and the changelogs it creates (their ``max.message.bytes``): Kafka's
    default of 1 MB is the state of an account with ~17,000 events in its lateness
    window. A batch that would grow a state past this (less 4 KiB of framing) goes to
    the dead letters as ``state_too_large`` and the state stays as it was:
    docs/state.md gives sizes (16 MiB holds 20,000 ids and 50,000 users with long ids,
    and their days with a few features)."""

    rules_file: str | None = None
    """The rules YAML; ``None`` means the defaults shipped in config/rules.yaml."""
    evaluation_step_s: Annotated[float, Field(ge=60, le=86_400)] = 21_600.0
    """The grid, in event time, on which every account's rules are evaluated (ticks on
    multiples of it since the epoch). Live and replay use the same grid, so they agree.
    Daily rules judge completed local days, so 6 h tells of a day at most 6 h after it
    ends; NPS answers are judged as they arrive, whatever the grid."""
    evaluation_delay_s: Annotated[float, Field(ge=0)] = 120.0
    """How long after a tick an idle account is judged at it by the clock, so events
    from just before the tick that are still on their way are counted."""
    sweep_interval_s: PositiveSeconds = 60.0
    """How often each worker checks its idle accounts for ticks the clock has passed."""
    catch_up_lag_s: PositiveSeconds = 3_600.0
    """Evaluation waits while the newest event is older than this (a backlog, or a
    stalled input): otherwise every account would look silent."""

    batch_max_events: PositiveInt = 5_000
    """Events folded together before per-account state is written (once per account)."""
    batch_within_s: PositiveSeconds = 0.5
    """Longest wait for a batch to fill; a quiet stream still flushes this often."""
    commit_interval_s: PositiveSeconds = 1.0
    """How often state is flushed to Kafka and event offsets committed (at most this much
    is read again after a crash; duplicates are recognised by event id)."""
    session_timeout_s: Annotated[float, Field(ge=10)] = 60.0
    """How long the group waits for a silent worker's heartbeats before giving its
    partitions to the others (Faust's ``broker_session_timeout``). A worker that stood
    still for half of it writes nothing until the group has said whose they are."""

    receivers_file: str | None = None
    """Where alerts are delivered (docs/delivery.md); ``None`` means the shipped
    config/receivers.yaml, which only logs alerts."""
    notifier_enabled: bool = True
    """Run the notifier (alerts topic -> receivers) in this worker."""
    public_url: str | None = None
    """Base URL of the triage page that messages link to, e.g. ``https://ew.example.com``;
    default: this worker's advertised URL."""
    api_token: str | None = None
    """Bearer token for the triage API's writes (acknowledge, snooze, resolve). Prefer
    ``api_token_file`` or the ENGAGEWATCH_API_TOKEN variable to keep it out of files."""
    api_token_file: str | None = None
    """A file holding the bearer token (e.g. a mounted secret); wins over ``api_token``."""
    api_reads_require_token: bool = False
    """Whether reading the triage API also needs the token."""

    @field_validator("kafka_bootstrap")
    @classmethod
    def _check_bootstrap(cls, value: str) -> str:
        servers = [part.strip() for part in value.split(",") if part.strip()]
        if not servers or not all(_HOST_PORT.match(server) for server in servers):
            raise ValueError(f"expected host:port[,host:port...], got {value!r}")
        return ",".join(servers)

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"expected a redis://, rediss:// or unix:// URL, got {value!r}")
        return value

    @field_validator("topic_prefix", "app_id")
    @classmethod
    def _check_topic_name(cls, value: str) -> str:
        if not _TOPIC_NAME.match(value):
            raise ValueError(f"use letters, digits, '.', '_' or '-' only, got {value!r}")
        return value

    @field_validator("table_store")
    @classmethod
    def _check_store(cls, value: str) -> str:
        if not value.startswith(("memory://", "rocksdb://")):
            raise ValueError(f"expected memory:// or rocksdb://, got {value!r}")
        return value

    @field_validator("stakeholder_roles", mode="before")
    @classmethod
    def _split_roles(cls, value: Any) -> Any:
        if isinstance(value, str):  # "champion, admin", or YAML's "[champion, admin]"
            listed = value.strip().removeprefix("[").removesuffix("]")
            roles = (role.strip().strip("'\"").strip() for role in listed.split(","))
            return tuple(role for role in roles if role)
        return value

    @property
    def kafka_url(self) -> str:
        """Bootstrap servers in Faust's ``kafka://`` URL form."""
        return ";".join(f"kafka://{server}" for server in self.kafka_bootstrap.split(","))

    def topic(self, suffix: str) -> str:
        """Full name of one of the engine's topics, e.g. ``topic("events.dlq")``."""
        return f"{self.topic_prefix}.{suffix}"


def load_settings(
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build settings from defaults, an optional YAML file and the environment."""
    environ = os.environ if environ is None else environ
    path = path or environ.get(f"{ENV_PREFIX}CONFIG") or None
    from_file: dict[str, Any] = {}
    if path is not None:
        from_file = load_yaml_mapping(Path(path))
    from_env = _settings_from_env(environ)
    try:
        return Settings.model_validate({**from_file, **from_env})
    except ValidationError as exc:
        raise _explain(exc, Path(path) if path else None, from_env) from None


def _settings_from_env(environ: Mapping[str, str]) -> dict[str, str]:
    """``ENGAGEWATCH_KAFKA_BOOTSTRAP=...`` becomes ``{"kafka_bootstrap": ...}``.

    Other ``ENGAGEWATCH_*`` variables belong to the scripts (``..._CACHE_DIR``) and are
    left alone, but one a letter or two from a setting is a typo that would otherwise
    be ignored without a word: it stops the start, naming the setting meant."""
    known = set(Settings.model_fields)
    values: dict[str, str] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == f"{ENV_PREFIX}CONFIG":
            continue
        field = name.removeprefix(ENV_PREFIX).lower()
        if field in known:
            values[field] = value
        elif meant := difflib.get_close_matches(field, known, n=1, cutoff=0.8):
            raise ConfigError(
                f"environment variable {name} is not a setting; "
                f"did you mean {ENV_PREFIX}{meant[0].upper()}?"
            )
    return values


def _explain(exc: ValidationError, path: Path | None, from_env: Mapping[str, str]) -> ConfigError:
    """Turn pydantic's report into one that names the file and line, or the variable."""
    lines = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"])
        top = str(error["loc"][0]) if error["loc"] else ""
        if top in from_env:
            where = f"environment variable {ENV_PREFIX}{top.upper()}"
        elif path is not None:
            where = locate(path, error["loc"], at_key=error["type"] == "extra_forbidden")
        else:
            where = "settings"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = f"unknown setting (known: {', '.join(sorted(Settings.model_fields))})"
        lines.append(f"{where}: {field}: {message}")
    return ConfigError("invalid settings:\n  " + "\n  ".join(lines))
