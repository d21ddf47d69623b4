"""Health rules as configuration: the models behind config/rules.yaml (docs/rules.md).

Loaded strictly: an unknown key, a wrong type or an impossible value stops the start
with the file, line and field. Each rule kind is one pydantic model; ``kind`` selects.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping
from datetime import date, timedelta
from fnmatch import fnmatchcase
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from config.yaml_source import ConfigError, load_yaml_mapping, locate

__all__ = [
    "AdoptionRule",
    "Calendar",
    "DropRule",
    "HealthRule",
    "NpsRule",
    "Rule",
    "RuleSet",
    "SilenceRule",
    "ThresholdRule",
    "TimeToValueRule",
    "calendars_for",
    "json_schema",
    "judged_features",
    "load_rules",
    "parse_duration_s",
]

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")

Severity = Literal["info", "warning", "critical"]
Fraction = Annotated[float, Field(ge=0, le=1)]
PositiveDays = Annotated[int, Field(gt=0, le=400)]


_NAME_SCHEMA = {
    "type": "string",
    "pattern": _NAME.pattern,
    "description": "lower-case letters, digits, '-' or '_' (at most 63)",
}


def _valid_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError("use lower-case letters, digits, '-' or '_' (at most 63)")
    return value


def parse_duration_s(value: Any) -> float:
    """``90``, ``"90s"``, ``"15m"``, ``"24h"``, ``"3d"``, ``"2w"`` -> seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    match = _DURATION.match(str(value).strip())
    if not match:
        raise ValueError(f"expected a duration like 90s, 15m, 24h, 3d or 2w, got {value!r}")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


Duration = Annotated[
    float,
    Field(ge=0),
    # What a user writes (90, "15m", "3d"), not the seconds it becomes: editors checking
    # the file against the schema must take the documented forms.
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": _DURATION.pattern},
            ],
            "description": "seconds, or a duration like 90s, 15m, 24h, 3d or 2w",
        }
    ),
]

# --- calendars -------------------------------------------------------------------------

_DAY = r"(?:\d{4}-)?\d{2}-\d{2}"
_ENTRY = re.compile(rf"^({_DAY})(?:\.\.({_DAY}))?$")
_ENTRY_HELP = (
    "expected a date (2026-12-24), a range (2026-12-24..2027-01-01), a day every year "
    "(12-25) or a range every year (12-24..12-31)"
)
MAX_RANGE_DAYS = 366
_LEAP = 2000  # yearly days are laid out on a leap year, so 02-29 is a valid one


def _check_entry(value: Any) -> str:
    """One calendar entry, as text (YAML reads an unquoted 2026-12-24 as a date)."""
    if isinstance(value, date):
        value = value.isoformat()
    if not isinstance(value, str):
        raise ValueError(_ENTRY_HELP)
    text = value.strip()
    _expand(text)
    return text


CalendarEntry = Annotated[
    str, BeforeValidator(_check_entry), Field(pattern=_ENTRY.pattern, examples=["12-24..12-31"])
]


def _expand(entry: str) -> tuple[frozenset[date], frozenset[tuple[int, int]]]:
    """An entry's dates: (fixed dates, yearly (month, day) pairs); raises on nonsense."""
    match = _ENTRY.match(entry)
    if not match:
        raise ValueError(f"{_ENTRY_HELP}, got {entry!r}")
    first_text, last_text = match.group(1), match.group(2) or match.group(1)
    yearly = len(first_text) == 5
    if yearly != (len(last_text) == 5):
        raise ValueError(f"{entry!r}: both ends need a year, or neither (every year)")
    first = _parse_day(first_text, yearly)
    last = _parse_day(last_text, yearly)
    if yearly and last < first:  # 12-24..01-02 runs over the new year
        last = last.replace(year=_LEAP + 1)
    if last < first:
        raise ValueError(f"{entry!r}: the range ends before it starts")
    if (last - first).days >= MAX_RANGE_DAYS:
        raise ValueError(f"{entry!r}: a range spans at most {MAX_RANGE_DAYS} days")
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    if yearly:
        return frozenset(), frozenset((d.month, d.day) for d in days)
    return frozenset(days), frozenset()


def _parse_day(text: str, yearly: bool) -> date:
    try:
        return date.fromisoformat(f"{_LEAP}-{text}" if yearly else text)
    except ValueError:
        raise ValueError(f"{text!r} is not a day of the calendar") from None


def _check_zone(zone: str) -> str:
    if any(c in zone for c in "*?["):
        return zone  # a pattern, matched against each account's zone
    try:
        ZoneInfo(zone)
    # With tzdata installed a name like 'Europe' is a directory: OSError, not NotFound.
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {zone!r} (or a pattern like Europe/*)") from None
    return zone


ZonePattern = Annotated[str, AfterValidator(_check_zone)]


class Calendar(BaseModel):
    """Days a group of accounts does not work (company closures, public holidays):
    silence and daily-rate rules treat them like a weekday the account never works."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    days: tuple[CalendarEntry, ...]
    """Dates, ranges (both ends included), and days or ranges that recur every year."""
    timezones: tuple[ZonePattern, ...] = ()
    """Accounts in these time zones (IANA names, or patterns like ``Europe/*``) follow
    this calendar unless their record names one."""
    _dates: frozenset[date] = PrivateAttr(default_factory=frozenset)
    _yearly: frozenset[tuple[int, int]] = PrivateAttr(default_factory=frozenset)

    @model_validator(mode="after")
    def _index(self) -> Calendar:
        dates: set[date] = set()
        yearly: set[tuple[int, int]] = set()
        for entry in self.days:
            fixed, recurring = _expand(entry)
            dates |= fixed
            yearly |= recurring
        self._dates, self._yearly = frozenset(dates), frozenset(yearly)
        return self

    def is_off(self, day: date) -> bool:
        """Whether ``day`` (a local day of the account) is a day off in this calendar."""
        return day in self._dates or (day.month, day.day) in self._yearly

    def covers(self, timezone: str) -> bool:
        """Whether accounts in ``timezone`` follow this calendar by default."""
        return any(fnmatchcase(timezone, zone) for zone in self.timezones)


def calendars_for(
    calendars: Mapping[str, Calendar], chosen: str | None, timezone: str
) -> tuple[str, ...]:
    """The calendars an account follows: the one its record names, if the rules define
    it; otherwise every calendar that covers its time zone (often none)."""
    if chosen is not None and chosen in calendars:
        return (chosen,)
    return tuple(name for name, calendar in calendars.items() if calendar.covers(timezone))


# --- rules -----------------------------------------------------------------------------


class _RuleBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    _calendars: Mapping[str, Calendar] = PrivateAttr(default_factory=dict)

    name: Annotated[str, WithJsonSchema(_NAME_SCHEMA)]
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
        return _valid_name(value)

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
            if name is not None and "." in name:
                raise ValueError(
                    f"{{{name}}}: fields are names, like {{value}}, or keys of one,"
                    " like {components[usage]}"
                )
            if conversion not in (None, "r", "s", "a"):
                raise ValueError(f"unknown conversion !{conversion} in a template")
        return value

    @field_validator("repeat_interval", "for_", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration_s(value)

    @property
    def calendars(self) -> Mapping[str, Calendar]:
        """The rules file's calendars (bound by :class:`RuleSet`; empty for a lone rule)."""
        # Straight from pydantic's store of private attributes: ``self._calendars`` goes
        # through ``BaseModel.__getattr__`` (about 2 us), and rules ask at every evaluation.
        private = self.__pydantic_private__
        assert private is not None, "set when the model is built (PrivateAttr default)"
        calendars: Mapping[str, Calendar] = private["_calendars"]
        return calendars


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
    """Daily baseline below which the rule stays quiet (tiny numbers are noise)."""
    statistic: Literal["mean", "median", "trend"] = "mean"
    """``mean``: the mean over all days of each window. ``median``: the typical full
    working day of each window (weekdays the account usually works at full strength),
    so a day or two off does not look like a drop while a team that uses the product
    less every day does. ``trend``: a log-linear trend fitted to the full working days
    of the last ``trend_days`` (days without any activity left out), firing when the
    fitted change across them is ``drop`` or more and the slope is ``min_z`` standard
    errors below zero, the noise measured from the account's own scatter
    (``alerts/decline.py``); ``recent_days``, ``baseline_days`` and
    ``baseline_gap_days`` are not used then, and ``min_baseline`` bounds the
    metric's usual daily size over the window."""
    trend_days: Annotated[int, Field(ge=14, le=120)] = 42
    """``statistic: trend``: the days the trend is fitted over (ending yesterday)."""
    min_z: Annotated[float, Field(ge=0, le=10)] = 2.0
    """``statistic: trend``: how many standard errors the slope must lie below zero."""
    min_trend_days: Annotated[int, Field(ge=3, le=120)] = 15
    """``statistic: trend``: the full working days with activity needed for a verdict
    (a newer or mostly idle account gets none)."""
    baseline_gap_days: Annotated[int, Field(ge=0, le=400)] = 0
    """Days between the baseline and the recent window: a baseline from a month back
    shows a slow decline that the weeks just before have already half followed."""
    exit_margin: Annotated[float, Field(ge=0, le=1)] = 0.1
    """An open alert resolves only once the change is back above ``-(drop - margin)``,
    so a metric hovering at the threshold does not flap."""
    for_days: Annotated[int, Field(gt=0, le=28)] = 1
    """The drop must show in the windows ending on each of the last ``for_days``
    completed days: one odd day is not a trend (and, unlike ``for``, a restart or a
    replay from scratch judges it at once)."""

    @model_validator(mode="after")
    def _check(self) -> DropRule:
        if self.statistic == "trend" and self.min_trend_days > self.trend_days:
            raise ValueError("min_trend_days must not exceed trend_days")
        return self


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
    statistic: Literal["mean", "median"] = "mean"
    """How the usage and trend parts read recent days. ``mean``: usage over the last 7
    working days, trend of the last 7 days against the 28 before. ``median``: the
    typical full working day (as for ``drop``) of the last two weeks for usage, of the
    last week against the four before for trend: days off do not turn an account
    yellow."""
    nps_prior_answers: Annotated[int, Field(ge=0, le=100)] = 0
    """Neutral answers the NPS part starts from, so one or two answers cannot swing
    the score from 0 to 1 (0: the raw NPS)."""

    @model_validator(mode="after")
    def _check(self) -> HealthRule:
        if self.yellow > self.green:
            raise ValueError("yellow must not be above green")
        if not sum(self.weights.values()):
            raise ValueError("weights must not all be zero")
        return self


CalendarName = Annotated[str, AfterValidator(_valid_name), WithJsonSchema(_NAME_SCHEMA)]

Rule = Annotated[
    SilenceRule | ThresholdRule | DropRule | AdoptionRule | TimeToValueRule | NpsRule | HealthRule,
    Field(discriminator="kind"),
]


class RuleSet(BaseModel):
    """The whole rules file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: tuple[Rule, ...]
    calendars: dict[CalendarName, Calendar] = Field(default_factory=dict)
    """Named calendars of days off; accounts choose one by name or by time zone."""

    @model_validator(mode="after")
    def _bind_calendars(self) -> RuleSet:
        # Rules are what every evaluator receives, so each carries the calendars.
        shared = MappingProxyType(dict(self.calendars))
        for rule in self.rules:
            rule._calendars = shared
        return self


def judged_features(rules: Iterable[Rule]) -> frozenset[str]:
    """Feature names the rules read: the state keeps them whatever the day's feature
    limit (``StatePolicy.kept_features``)."""
    return frozenset(rule.feature for rule in rules if isinstance(rule, AdoptionRule))


def load_rules(path: Path) -> RuleSet:
    """Load and validate a rules file; errors name the file, line and field."""
    data = load_yaml_mapping(path)
    try:
        ruleset = RuleSet.model_validate(data)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            message = error["msg"].removeprefix("Value error, ")
            loc = _field_path(error["loc"], error["type"])
            loc += _blamed_field(data, loc, message)
            field = ".".join(str(part) for part in loc)
            at_key = error["type"] == "extra_forbidden" or error["loc"][-1] == "[key]"
            where = locate(path, loc, at_key=at_key)
            lines.append(f"{where}: {field}: {message}")
        raise ConfigError("invalid rules:\n  " + "\n  ".join(lines)) from None
    _check_unique_names(ruleset, path)
    return ruleset


_KINDS = frozenset({"silence", "threshold", "drop", "adoption", "time_to_value", "nps", "health"})


def _field_path(loc: tuple[int | str, ...], error_type: str) -> list[int | str]:
    """The error's path in the file: without pydantic's union tag (``rules.0.drop.value``
    is the ``value`` of rule 0, a drop rule), and at ``kind`` for an unknown kind."""
    path = list(loc)
    if path and path[-1] == "[key]":  # a bad mapping key: the key itself is the field
        del path[-1]
    if len(path) >= 3 and path[0] == "rules" and isinstance(path[1], int) and path[2] in _KINDS:
        del path[2]
    if error_type in ("union_tag_invalid", "union_tag_not_found"):
        path.append("kind")
    return path


def _blamed_field(data: Any, loc: list[int | str], message: str) -> list[str]:
    """A check across a rule's fields (``yellow must not be above green``) fails on the
    whole rule; its message begins with the field it blames, whose line is more use
    than the rule's first."""
    if len(loc) != 2 or loc[0] != "rules" or not isinstance(loc[1], int):
        return []
    rules = data.get("rules") if isinstance(data, dict) else None
    rule = rules[loc[1]] if isinstance(rules, list) and loc[1] < len(rules) else None
    blamed = message.split(" ", 1)[0]
    return [blamed] if isinstance(rule, dict) and blamed in rule else []


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
    # pydantic lists valid calendar names as patternProperties, which lets other keys
    # through unchecked; the loader refuses them, so the schema does too.
    schema["properties"]["calendars"]["propertyNames"] = _NAME_SCHEMA
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "engagewatch rules (config/rules.yaml)"
    return schema


if __name__ == "__main__":
    import json

    print(json.dumps(json_schema(), indent=2, sort_keys=True))
