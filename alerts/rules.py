"""Health rules as configuration: the models behind config/rules.yaml (docs/rules.md).

Loaded strictly: an unknown key, a wrong type or an impossible value stops the start
with the file, line and field. Each rule kind is one pydantic model; ``kind`` selects.
"""

from __future__ import annotations

import re
import string
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from config.yaml_source import ConfigError, load_yaml_mapping, locate

__all__ = [
    "AdoptionRule",
    "DropRule",
    "HealthRule",
    "NpsRule",
    "Rule",
    "RuleSet",
    "SilenceRule",
    "ThresholdRule",
    "TimeToValueRule",
    "json_schema",
    "load_rules",
    "parse_duration_s",
]

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")

Severity = Literal["info", "warning", "critical"]
Fraction = Annotated[float, Field(ge=0, le=1)]
PositiveDays = Annotated[int, Field(gt=0, le=400)]


def parse_duration_s(value: Any) -> float:
    """``90``, ``"90s"``, ``"15m"``, ``"24h"``, ``"3d"``, ``"2w"`` -> seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    match = _DURATION.match(str(value).strip())
    if not match:
        raise ValueError(f"expected a duration like 90s, 15m, 24h, 3d or 2w, got {value!r}")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


Duration = Annotated[float, Field(ge=0)]


class _RuleBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str
    severity: Severity = "warning"
    labels: dict[str, str] = Field(default_factory=dict)
    summary: str = "{rule} on {account_name}: {metric} is {value}"
    description: str = ""
    skip_statuses: tuple[str, ...] = ("paused", "churned")
    """Accounts in these statuses raise nothing for this rule (inhibited)."""
    repeat_interval: Duration = 7 * 86_400.0
    """A firing alert is re-notified this often while it holds."""
    for_: Duration = Field(default=0.0, alias="for")
    """How long the condition must hold before the alert fires (Prometheus' ``for``)."""

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("use lower-case letters, digits, '-' or '_' (at most 63)")
        return value

    @field_validator("summary", "description")
    @classmethod
    def _check_template(cls, value: str) -> str:
        try:
            parts = list(string.Formatter().parse(value))
        except ValueError as exc:
            raise ValueError(f"not a valid template ({exc}); write fields as {{value}}") from None
        for _, name, _, conversion in parts:
            if name is not None and (not name or name[0].isdigit()):
                raise ValueError("fields need a name, like {value} or {account_name}")
            if conversion not in (None, "r", "s", "a"):
                raise ValueError(f"unknown conversion !{conversion} in a template")
        return value

    @field_validator("repeat_interval", "for_", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration_s(value)


class SilenceRule(_RuleBase):
    """No activity for longer than the account's (or a stakeholder's) habit allows."""

    kind: Literal["silence"]
    scope: Literal["account", "stakeholder"] = "account"
    roles: tuple[str, ...] = ("champion",)
    """For ``scope: stakeholder``: which roles are watched, one alert per person."""
    min_history_days: PositiveDays = 21
    """Days since first seen before the habit is trusted (new accounts: onboarding rules)."""
    min_active_days: PositiveDays = 8
    """Active days in the horizon needed to call it a habit."""
    working_day_rate: Fraction = 0.4
    """A weekday counts as a working day if active on at least this share of them."""
    gap_multiple: Annotated[float, Field(gt=0)] = 2.0
    """Silent when missed working days exceed this multiple of the usual longest gap..."""
    min_missed_working_days: PositiveDays = 3
    """... and at least this many (so a two-working-day break never fires)."""
    skip_statuses: tuple[str, ...] = ("paused", "churned", "onboarding")


class ThresholdRule(_RuleBase):
    """A daily metric beyond a bound on each of the last ``for_working_days`` working days."""

    kind: Literal["threshold"]
    metric: Literal["daily_usage_rate", "active_users", "average_time_per_login_s"]
    op: Literal["<", "<=", ">", ">="] = "<"
    value: float
    for_working_days: PositiveDays = 3
    working_day_rate: Fraction = 0.4
    min_history_days: PositiveDays = 21
    """Days since first seen before daily rates are judged (new accounts: onboarding)."""


class DropRule(_RuleBase):
    """A metric fell by at least ``drop`` against the account's own trailing baseline."""

    kind: Literal["drop"]
    metric: Literal["active_users", "logins", "sessions", "session_s", "events"] = "active_users"
    recent_days: PositiveDays = 7
    baseline_days: PositiveDays = 28
    drop: Annotated[float, Field(gt=0, le=1)] = 0.4
    min_baseline: Annotated[float, Field(ge=0)] = 2.0
    """Daily baseline mean below which the rule stays quiet (tiny numbers are noise)."""


class AdoptionRule(_RuleBase):
    """A key feature not adopted ``within_days`` after onboarding (or after its launch)."""

    kind: Literal["adoption"]
    feature: str
    within_days: PositiveDays = 30
    launched_on: date | None = None
    min_users: Annotated[int, Field(gt=0)] = 1
    min_days: Annotated[int, Field(gt=0)] = 1
    window_days: PositiveDays = 28


class TimeToValueRule(_RuleBase):
    """No value milestone yet, ``max_days`` after contract start."""

    kind: Literal["time_to_value"]
    max_days: PositiveDays = 30


class NpsRule(_RuleBase):
    """A detractor answer from a stakeholder, in the last ``within_days``."""

    kind: Literal["nps"]
    roles: tuple[str, ...] = ("champion", "admin", "executive")
    max_score: Annotated[int, Field(ge=0, le=10)] = 6
    within_days: PositiveDays = 14


HealthPart = Literal["usage", "activity", "trend", "nps"]


def _default_weights() -> dict[HealthPart, float]:
    return {"usage": 0.4, "activity": 0.3, "trend": 0.2, "nps": 0.1}


class HealthRule(_RuleBase):
    """A weighted health score; alerts while the account is below the green tier."""

    kind: Literal["health"]
    weights: dict[HealthPart, Annotated[float, Field(ge=0)]] = Field(
        default_factory=_default_weights
    )
    green: Fraction = 0.7
    yellow: Fraction = 0.4
    usage_target: Annotated[float, Field(gt=0, le=1)] = 0.7
    """Daily usage rate that scores full marks (the 70% adoption target)."""
    exit_margin: Annotated[float, Field(ge=0, le=0.5)] = 0.05
    """An open alert resolves only once the score is back above green + this margin,
    so a score hovering at the boundary does not flap."""

    @model_validator(mode="after")
    def _check(self) -> HealthRule:
        if self.yellow > self.green:
            raise ValueError("yellow must not be above green")
        if not sum(self.weights.values()):
            raise ValueError("weights must not all be zero")
        return self


Rule = Annotated[
    SilenceRule | ThresholdRule | DropRule | AdoptionRule | TimeToValueRule | NpsRule | HealthRule,
    Field(discriminator="kind"),
]


class RuleSet(BaseModel):
    """The whole rules file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: tuple[Rule, ...]


def load_rules(path: Path) -> RuleSet:
    """Load and validate a rules file; errors name the file, line and field."""
    data = load_yaml_mapping(path)
    try:
        ruleset = RuleSet.model_validate(data)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            loc = _field_path(error["loc"], error["type"])
            field = ".".join(str(part) for part in loc)
            where = locate(path, loc, at_key=error["type"] == "extra_forbidden")
            message = error["msg"].removeprefix("Value error, ")
            lines.append(f"{where}: {field}: {message}")
        raise ConfigError("invalid rules:\n  " + "\n  ".join(lines)) from None
    _check_unique_names(ruleset, path)
    return ruleset


_KINDS = frozenset({"silence", "threshold", "drop", "adoption", "time_to_value", "nps", "health"})


def _field_path(loc: tuple[int | str, ...], error_type: str) -> list[int | str]:
    """The error's path in the file: without pydantic's union tag (``rules.0.drop.value``
    is the ``value`` of rule 0, a drop rule), and at ``kind`` for an unknown kind."""
    path = list(loc)
    if len(path) >= 3 and path[0] == "rules" and isinstance(path[1], int) and path[2] in _KINDS:
        del path[2]
    if error_type in ("union_tag_invalid", "union_tag_not_found"):
        path.append("kind")
    return path


def _check_unique_names(ruleset: RuleSet, path: Path) -> None:
    first: dict[str, int] = {}
    for index, rule in enumerate(ruleset.rules):
        if rule.name in first:
            where = locate(path, ["rules", index, "name"])
            raise ConfigError(
                f"invalid rules:\n  {where}: rules.{index}.name: rule {first[rule.name]} "
                f"is already named {rule.name!r}; names must be unique"
            )
        first[rule.name] = index


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the rules file, for editors (config/rules.schema.json)."""
    schema = RuleSet.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "engagewatch rules (config/rules.yaml)"
    return schema


if __name__ == "__main__":
    import json

    print(json.dumps(json_schema(), indent=2, sort_keys=True))
