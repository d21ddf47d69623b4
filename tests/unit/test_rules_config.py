"""Health rules as configuration: the shipped file, every kind, durations, and errors.

Good and bad example files live in ``testdata/rules/`` (as alertmanager keeps its
``config/testdata/``); each error test names the file, the line and the field it
expects, counted by hand from the example file.
"""

from __future__ import annotations

import string
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from alerts.rules import (
    AdoptionRule,
    Calendar,
    DropRule,
    HealthRule,
    NpsRule,
    RuleSet,
    SilenceRule,
    ThresholdRule,
    TimeToValueRule,
    calendars_for,
    load_rules,
    parse_duration_s,
)
from config.yaml_source import ConfigError

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "rules.yaml"
TESTDATA = Path(__file__).parent / "testdata" / "rules"
WEEK_S = 7 * 86_400.0


def example(name: str) -> Path:
    path = TESTDATA / name
    assert path.is_file(), path
    return path


def rules_error(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_rules(path)
    return str(caught.value)


# --- the shipped defaults ---------------------------------------------------------------


def test_shipped_rules_load() -> None:
    rules = load_rules(SHIPPED).rules
    assert [(rule.name, rule.kind) for rule in rules] == [
        ("account-silent", "silence"),
        ("champion-silent", "silence"),
        ("low-daily-usage", "threshold"),
        ("usage-drop", "drop"),
        ("engagement-decline", "drop"),
        ("reports-not-adopted", "adoption"),
        ("slow-time-to-value", "time_to_value"),
        ("detractor", "nps"),
        ("health-tier", "health"),
    ]


def test_shipped_rules_values() -> None:
    rules = {rule.name: rule for rule in load_rules(SHIPPED).rules}
    silent = rules["account-silent"]
    assert isinstance(silent, SilenceRule)
    assert (silent.severity, silent.scope) == ("critical", "account")
    assert (silent.min_history_days, silent.min_active_days) == (21, 8)
    assert (silent.working_day_rate, silent.gap_multiple) == (0.4, 2.0)
    assert silent.min_missed_working_days == 4
    assert silent.skip_statuses == ("paused", "churned", "onboarding")
    champion = rules["champion-silent"]
    assert isinstance(champion, SilenceRule)
    assert (champion.scope, champion.roles) == ("stakeholder", ("champion",))
    assert (champion.min_active_days, champion.min_missed_working_days) == (6, 4)
    low = rules["low-daily-usage"]
    assert isinstance(low, ThresholdRule)
    assert (low.metric, low.op, low.value, low.for_working_days) == (
        "daily_usage_rate",
        "<",
        0.1,
        5,
    )
    assert low.min_history_days == 21
    drop = rules["usage-drop"]
    assert isinstance(drop, DropRule)
    assert (drop.metric, drop.statistic, drop.trend_days) == ("active_users", "trend", 42)
    assert (drop.min_trend_days, drop.min_z) == (15, 2.0)
    assert (drop.drop, drop.min_baseline, drop.exit_margin, drop.for_days) == (0.45, 3.0, 0.1, 2)
    engaged = rules["engagement-decline"]
    assert isinstance(engaged, DropRule)
    assert (engaged.metric, engaged.statistic, engaged.trend_days) == ("session_s", "trend", 42)
    assert (engaged.min_trend_days, engaged.min_z) == (15, 2.0)
    assert (engaged.drop, engaged.min_baseline, engaged.exit_margin) == (0.6, 1800.0, 0.1)
    assert engaged.for_days == 2
    adoption = rules["reports-not-adopted"]
    assert isinstance(adoption, AdoptionRule)
    assert (adoption.feature, adoption.within_days, adoption.severity) == ("reports", 30, "info")
    assert (adoption.min_users, adoption.min_days, adoption.launched_on) == (2, 3, None)
    ttv = rules["slow-time-to-value"]
    assert isinstance(ttv, TimeToValueRule)
    assert ttv.max_days == 30
    nps = rules["detractor"]
    assert isinstance(nps, NpsRule)
    assert (nps.roles, nps.max_score, nps.within_days) == (
        ("champion", "admin", "executive"),
        6,
        14,
    )
    health = rules["health-tier"]
    assert isinstance(health, HealthRule)
    assert health.weights == {"usage": 0.4, "activity": 0.3, "trend": 0.2, "nps": 0.1}
    assert (health.green, health.yellow, health.usage_target) == (0.5, 0.35, 0.7)
    assert (health.statistic, health.nps_prior_answers, health.exit_margin) == ("median", 3, 0.05)
    # No shipped rule sets a repeat interval: all re-notify weekly.
    assert {rule.repeat_interval for rule in rules.values()} == {WEEK_S}


def test_shipped_summaries_only_use_known_placeholders() -> None:
    # Placeholders every finding offers, plus the evidence keys of each kind.
    common = {"rule", "account_id", "account_name", "subject", "metric", "value"}
    evidence = {
        "silence": {"threshold", "baseline", "last_active_day", "working_weekdays", "last_seen"},
        "threshold": {"threshold", "values"},
        "drop": {"baseline", "threshold", "change", "z", "days"},
        "adoption": {"threshold", "due"},
        "time_to_value": {"threshold"},
        "nps": {"threshold", "answers"},
        "health": {"threshold", "tier", "components"},
    }
    for rule in load_rules(SHIPPED).rules:
        for template in (rule.summary, rule.description):
            names = {name for _, name, _, _ in string.Formatter().parse(template) if name}
            assert names <= common | evidence[rule.kind], (rule.name, names)


# --- every kind, good examples ----------------------------------------------------------


def test_good_example_sets_every_option() -> None:
    rules = load_rules(example("good.yaml")).rules
    assert [type(rule) for rule in rules] == [
        SilenceRule,
        SilenceRule,
        ThresholdRule,
        DropRule,
        AdoptionRule,
        TimeToValueRule,
        NpsRule,
        HealthRule,
    ]
    silent, sponsor, low, drop, adoption, ttv, nps, health = rules
    assert isinstance(silent, SilenceRule)
    assert silent == SilenceRule(
        name="account-silent",
        kind="silence",
        severity="critical",
        scope="account",
        min_history_days=28,
        min_active_days=10,
        working_day_rate=0.5,
        gap_multiple=1.5,
        min_missed_working_days=4,
        repeat_interval=3 * 86_400,
        labels={"team": "cs-emea"},
        summary="{account_name} silent for {value} working days",
        description="Last active {last_active_day}",
    )
    assert isinstance(sponsor, SilenceRule)
    assert sponsor.roles == ("champion", "executive")
    assert sponsor.skip_statuses == ("churned",)
    assert sponsor.repeat_interval == 2 * WEEK_S
    assert isinstance(low, ThresholdRule)
    assert (low.metric, low.op, low.value) == ("average_time_per_login_s", "<=", 120.0)
    assert (low.for_working_days, low.working_day_rate, low.severity) == (4, 0.3, "info")
    assert (low.min_history_days, low.repeat_interval) == (14, 86_400.0)
    assert isinstance(drop, DropRule)
    assert (drop.metric, drop.recent_days, drop.baseline_days) == ("sessions", 14, 56)
    assert (drop.drop, drop.min_baseline, drop.repeat_interval) == (0.25, 0.5, 900.0)
    assert (drop.statistic, drop.baseline_gap_days, drop.exit_margin, drop.for_days) == (
        "median",
        14,
        0.05,
        3,
    )
    assert isinstance(adoption, AdoptionRule)
    assert adoption.launched_on == date(2026, 3, 1)
    assert (adoption.within_days, adoption.min_users, adoption.min_days) == (45, 3, 5)
    assert (adoption.window_days, adoption.repeat_interval) == (14, 90.0)
    assert isinstance(ttv, TimeToValueRule)
    assert (ttv.max_days, ttv.repeat_interval) == (21, 3600.0)
    assert isinstance(nps, NpsRule)
    assert (nps.roles, nps.max_score, nps.within_days) == (("champion",), 4, 7)
    assert nps.repeat_interval == 5400.0
    assert isinstance(health, HealthRule)
    assert health.weights == {"usage": 1.0, "activity": 1.0, "trend": 0.0, "nps": 2.0}
    # yellow == green is allowed: the account is then either green or red.
    assert (health.green, health.yellow, health.usage_target) == (0.8, 0.8, 0.5)
    assert (health.statistic, health.nps_prior_answers) == ("median", 2)


def test_minimal_example_takes_the_defaults() -> None:
    rules = load_rules(example("minimal.yaml")).rules
    assert [rule.kind for rule in rules] == [
        "silence",
        "threshold",
        "drop",
        "adoption",
        "time_to_value",
        "nps",
        "health",
    ]
    silent, low, drop, adoption, ttv, nps, health = rules
    for rule in rules:
        assert rule.severity == "warning"
        assert rule.labels == {}
        assert rule.summary == "{rule} on {account_name}: {metric} is {value}"
        assert rule.description == ""
        assert rule.repeat_interval == WEEK_S
    assert isinstance(silent, SilenceRule)
    assert (silent.scope, silent.roles) == ("account", ("champion",))
    assert (silent.min_history_days, silent.min_active_days, silent.working_day_rate) == (
        21,
        8,
        0.4,
    )
    assert (silent.gap_multiple, silent.min_missed_working_days) == (2.0, 3)
    # Only silence also holds its verdict for onboarding accounts.
    assert silent.skip_statuses == ("paused", "churned", "onboarding")
    assert low.skip_statuses == ("paused", "churned")
    assert isinstance(low, ThresholdRule)
    assert (low.op, low.value, low.for_working_days, low.working_day_rate) == ("<", 0.7, 3, 0.4)
    assert low.min_history_days == 21
    assert isinstance(drop, DropRule)
    assert (drop.metric, drop.recent_days, drop.baseline_days) == ("active_users", 7, 28)
    assert (drop.drop, drop.min_baseline) == (0.4, 2.0)
    # Means over adjacent windows, at once, as before typical days and gaps existed.
    assert (drop.statistic, drop.baseline_gap_days, drop.exit_margin, drop.for_days) == (
        "mean",
        0,
        0.1,
        1,
    )
    assert isinstance(adoption, AdoptionRule)
    assert (adoption.feature, adoption.within_days, adoption.launched_on) == ("export", 30, None)
    assert (adoption.min_users, adoption.min_days, adoption.window_days) == (1, 1, 28)
    assert isinstance(ttv, TimeToValueRule)
    assert ttv.max_days == 30
    assert isinstance(nps, NpsRule)
    assert (nps.roles, nps.max_score, nps.within_days) == (
        ("champion", "admin", "executive"),
        6,
        14,
    )
    assert isinstance(health, HealthRule)
    assert health.weights == {"usage": 0.4, "activity": 0.3, "trend": 0.2, "nps": 0.1}
    assert (health.green, health.yellow, health.usage_target) == (0.7, 0.4, 0.7)
    assert (health.statistic, health.nps_prior_answers) == ("mean", 0)
    # No calendars: every rule sees none.
    assert all(rule.calendars == {} for rule in rules)


def test_an_empty_rule_list_is_allowed() -> None:
    assert load_rules(example("empty_list.yaml")) == RuleSet(rules=())


def test_rules_are_frozen() -> None:
    rule = load_rules(example("minimal.yaml")).rules[0]
    with pytest.raises(ValidationError):
        rule.name = "other"


# --- calendars --------------------------------------------------------------------------


def test_calendars_load_with_every_form_of_entry() -> None:
    ruleset = load_rules(example("calendars.yaml"))
    assert list(ruleset.calendars) == ["year-end", "de", "americas"]
    de = ruleset.calendars["de"]
    # YAML reads an unquoted 2026-10-03 as a date: it is kept as the text it was.
    assert de.days == ("2026-10-03", "2026-05-14", "2026-12-24..2026-12-31", "05-01")
    assert de.timezones == ("Europe/Berlin",)
    assert de.is_off(date(2026, 10, 3)) and not de.is_off(date(2027, 10, 3))
    assert de.is_off(date(2026, 12, 24)) and de.is_off(date(2026, 12, 31))
    assert not de.is_off(date(2026, 12, 23)) and not de.is_off(date(2027, 1, 1))
    assert de.is_off(date(2026, 5, 1)) and de.is_off(date(2031, 5, 1))  # every year
    year_end = ruleset.calendars["year-end"]
    # 12-24..01-01 runs over the new year, every year.
    assert [year_end.is_off(date(2030, 12, d)) for d in (23, 24, 31)] == [False, True, True]
    assert year_end.is_off(date(2031, 1, 1)) and not year_end.is_off(date(2031, 1, 2))
    # Every rule carries the file's calendars (evaluation gets only the rule).
    assert all(rule.calendars == ruleset.calendars for rule in ruleset.rules)


def test_a_yearly_29_february_is_off_only_in_leap_years() -> None:
    calendar = Calendar(days=("02-29",))
    assert calendar.is_off(date(2028, 2, 29))
    assert not calendar.is_off(date(2027, 2, 28)) and not calendar.is_off(date(2027, 3, 1))


def test_an_account_follows_its_named_calendar_else_those_of_its_time_zone() -> None:
    calendars = load_rules(example("calendars.yaml")).calendars
    assert calendars_for(calendars, "year-end", "Europe/Berlin") == ("year-end",)
    assert calendars_for(calendars, None, "Europe/Berlin") == ("de",)
    assert calendars_for(calendars, None, "America/Chicago") == ("americas",)
    assert calendars_for(calendars, None, "Asia/Tokyo") == ()
    # A name the rules do not define: as if the record named none.
    assert calendars_for(calendars, "fr", "Europe/Berlin") == ("de",)
    assert Calendar(days=(), timezones=("*",)).covers("Asia/Tokyo")


def test_calendar_errors_name_file_line_and_field() -> None:
    path = example("bad_calendars.yaml")
    lines = rules_error(path).splitlines()
    assert lines[0] == "invalid rules:"
    assert [line.strip() for line in lines[1:]] == [
        f"{path}:2: calendars.Year End: use lower-case letters, digits, '-' or '_' (at most 63)",
        f"{path}:8: calendars.de.days.1: '2026-12-31..2026-12-24': the range ends before it starts",
        f"{path}:9: calendars.de.days.2: '13-01' is not a day of the calendar",
        f"{path}:10: calendars.de.days.3: '2026-12-24..12-31': both ends need a year, or "
        "neither (every year)",
        f"{path}:11: calendars.de.days.4: expected a date (2026-12-24), a range "
        "(2026-12-24..2027-01-01), a day every year (12-25) or a range every year "
        "(12-24..12-31)",
        f"{path}:12: calendars.de.days.5: '2026-01-01..2027-06-01': a range spans at most 366 days",
        f"{path}:5: calendars.de.timezones.0: unknown time zone 'Europe/Berln' (or a pattern "
        "like Europe/*)",
        f"{path}:13: calendars.de.holidays: Extra inputs are not permitted",
        f"{path}:14: calendars.empty.days: Field required",
    ]


@pytest.mark.parametrize(
    "entry", ["2026-12-24", "12-24", "2026-12-24..2027-01-02", "12-24..01-02", " 12-25 "]
)
def test_good_calendar_entries(entry: str) -> None:
    assert Calendar(days=(entry,)).days == (entry.strip(),)


@pytest.mark.parametrize(
    "entry", ["", "24.12.2026", "2026-12-24..", "..12-24", "2026-02-30", "12-24...12-31", "xmas"]
)
def test_bad_calendar_entries(entry: str) -> None:
    with pytest.raises(ValidationError):
        Calendar(days=(entry,))


# --- durations --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("90s", 90.0),
        ("15m", 900.0),
        ("24h", 86_400.0),
        ("3d", 259_200.0),
        ("2w", 1_209_600.0),
        ("1.5h", 5_400.0),
        (" 15m ", 900.0),
        ("0s", 0.0),
        (90, 90.0),
        (2.5, 2.5),
        (0, 0.0),
    ],
)
def test_parse_duration(value: Any, seconds: float) -> None:
    assert parse_duration_s(value) == seconds


@pytest.mark.parametrize("value", ["3 days", "15", "1y", "", "m", "15M", "-5s", True, None])
def test_parse_duration_rejects(value: Any) -> None:
    with pytest.raises(ValueError, match="expected a duration like 90s, 15m, 24h, 3d or 2w"):
        parse_duration_s(value)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("90s", 90.0),
        ("15m", 900.0),
        ("24h", 86_400.0),
        ("3d", 259_200.0),
        ("2w", 1_209_600.0),
        (3600, 3600.0),
        (0.5, 0.5),
    ],
)
def test_repeat_interval_takes_durations(value: Any, seconds: float) -> None:
    rule = NpsRule.model_validate({"name": "n", "kind": "nps", "repeat_interval": value})
    assert rule.repeat_interval == seconds


def test_bad_duration_names_file_line_and_field() -> None:
    path = example("bad_duration.yaml")
    message = rules_error(path)
    assert (
        f"{path}:4: rules.0.repeat_interval: expected a duration like 90s, 15m, 24h, 3d or 2w, "
        "got '3 days'"
    ) in message


def test_negative_duration_is_rejected() -> None:
    path = example("negative_duration.yaml")
    message = rules_error(path)
    assert f"{path}:4: rules.0.repeat_interval: Input should be greater than or equal to 0" in (
        message
    )


# --- errors: keys, types, enums ---------------------------------------------------------


def test_unknown_key_names_the_key_and_its_line() -> None:
    path = example("unknown_key.yaml")
    message = rules_error(path)
    assert message.startswith("invalid rules:\n")
    assert f"{path}:7: rules.1.drop_by: Extra inputs are not permitted" in message


def test_unknown_key_with_a_block_value_names_the_key_line() -> None:
    path = example("unknown_key_block.yaml")
    assert f"{path}:5: rules.0.tiers: Extra inputs are not permitted" in rules_error(path)


def test_unknown_top_level_key() -> None:
    path = example("unknown_top_level.yaml")
    assert f"{path}:2: routes: Extra inputs are not permitted" in rules_error(path)


def test_wrong_type_names_file_line_and_field() -> None:
    path = example("wrong_type.yaml")
    message = rules_error(path)
    assert f"{path}:7: rules.1.gap_multiple: Input should be a valid number" in message
    # Only the second rule is wrong.
    assert "rules.0" not in message


def test_a_scalar_where_a_list_is_expected() -> None:
    path = example("bad_roles_type.yaml")
    assert f"{path}:4: rules.0.roles: Input should be a valid tuple" in rules_error(path)


def test_rules_must_be_a_list() -> None:
    path = example("rules_not_a_list.yaml")
    assert f"{path}:2: rules: Input should be a valid tuple" in rules_error(path)


def test_bad_kind_names_the_tag_and_the_valid_ones() -> None:
    path = example("bad_kind.yaml")
    message = rules_error(path)
    assert f"{path}:" in message
    assert "rules.0" in message
    assert "'sillence'" in message
    for kind in ("silence", "threshold", "drop", "adoption", "time_to_value", "nps", "health"):
        assert f"'{kind}'" in message


def test_bad_kind_names_the_kind_line_and_field() -> None:
    path = example("bad_kind.yaml")
    assert f"{path}:3: rules.0.kind:" in rules_error(path)


def test_missing_kind() -> None:
    path = example("missing_kind.yaml")
    message = rules_error(path)
    assert f"{path}:2: rules.0.kind: Unable to extract tag using discriminator 'kind'" in message


def test_bad_op() -> None:
    path = example("bad_op.yaml")
    assert f"{path}:5: rules.0.op: Input should be '<', '<=', '>' or '>='" in rules_error(path)


def test_bad_severity() -> None:
    path = example("bad_severity.yaml")
    message = rules_error(path)
    assert f"{path}:7: rules.1.severity: Input should be 'info', 'warning' or 'critical'" in (
        message
    )


def test_bad_metric() -> None:
    path = example("bad_metric.yaml")
    message = rules_error(path)
    assert (
        f"{path}:4: rules.0.metric: Input should be 'daily_usage_rate', 'active_users' or "
        "'average_time_per_login_s'"
    ) in message


def test_missing_required_fields_point_at_the_rule() -> None:
    path = example("missing_field.yaml")
    message = rules_error(path)
    assert f"{path}:2: rules.0.metric: Field required" in message
    assert f"{path}:2: rules.0.value: Field required" in message


def test_values_out_of_range() -> None:
    path = example("out_of_range.yaml")
    message = rules_error(path)
    assert f"{path}:4: rules.0.working_day_rate: Input should be less than or equal to 1" in (
        message
    )
    assert f"{path}:5: rules.0.min_history_days: Input should be greater than 0" in message


def test_several_errors_are_all_reported() -> None:
    path = example("several_errors.yaml")
    message = rules_error(path)
    assert f"{path}:4: rules.0.gap_multiple: Input should be greater than 0" in message
    assert f"{path}:8: rules.1.value: Input should be a valid number" in message
    assert f"{path}:11: rules.2.max_score: Input should be less than or equal to 10" in message
    assert message.count(f"\n  {path}:") == 3


def test_bad_rule_name() -> None:
    path = example("bad_name.yaml")
    message = rules_error(path)
    assert f"{path}:4: rules.1.name: use lower-case letters, digits, '-' or '_' (at most 63)" in (
        message
    )


@pytest.mark.parametrize("name", ["a", "account-silent", "rule_2", "9lives", "x" * 63])
def test_good_rule_names(name: str) -> None:
    assert NpsRule(name=name, kind="nps").name == name


@pytest.mark.parametrize("name", ["", "Account", "-lead", "_lead", "a b", "a.b", "x" * 64, "é"])
def test_bad_rule_names(name: str) -> None:
    with pytest.raises(ValidationError, match="use lower-case letters"):
        NpsRule(name=name, kind="nps")


# --- errors: whole-rule and whole-file checks -------------------------------------------


def test_duplicate_names_are_rejected() -> None:
    message = rules_error(example("duplicate_names.yaml"))
    assert "already named 'detractor'; names must be unique" in message


def test_duplicate_names_name_the_line_and_field() -> None:
    path = example("duplicate_names.yaml")
    expected = f"{path}:6: rules.2.name: rule 0 is already named 'detractor'"
    assert expected in rules_error(path)


def test_yellow_above_green() -> None:
    path = example("yellow_above_green.yaml")
    # A check across two fields points at the field it blames.
    assert f"{path}:5: rules.0.yellow: yellow must not be above green" in rules_error(path)


def test_all_zero_weights() -> None:
    path = example("zero_weights.yaml")
    assert f"{path}:4: rules.0.weights: weights must not all be zero" in rules_error(path)


def test_unknown_weight_names_the_key() -> None:
    path = example("bad_weight_key.yaml")
    message = rules_error(path)
    assert f"{path}:6: rules.0.weights.logins" in message
    assert "'usage', 'activity', 'trend' or 'nps'" in message


def test_bad_weight_value_names_the_weight() -> None:
    path = example("bad_weight_value.yaml")
    assert f"{path}:6: rules.0.weights.nps: Input should be a valid number" in rules_error(path)


def test_bad_drop_fraction_names_the_field() -> None:
    path = example("bad_drop.yaml")
    assert f"{path}:5: rules.0.drop: Input should be less than or equal to 1" in rules_error(path)


def test_bad_drop_fraction_is_rejected() -> None:
    message = rules_error(example("bad_drop.yaml"))
    assert "Input should be less than or equal to 1" in message


# --- errors: the file itself ------------------------------------------------------------


def test_invalid_yaml_names_the_line() -> None:
    path = example("invalid_syntax.yaml")
    assert rules_error(path).startswith(f"{path}:4: not valid YAML")


def test_invalid_yaml_in_a_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text('rules:\n  - name: "unclosed\n    kind: nps\n', encoding="utf-8")
    message = rules_error(path)
    assert message.startswith(f"{path}:")
    assert "not valid YAML" in message


def test_top_level_must_be_a_mapping() -> None:
    path = example("not_a_mapping.yaml")
    message = rules_error(path)
    assert message.startswith(f"{path}:1: expected a mapping")
    assert "list" in message


def test_a_file_without_rules() -> None:
    path = example("empty.yaml")
    assert f"{path}:1: rules: Field required" in rules_error(path)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert rules_error(path).startswith(f"{path}: cannot read config file")
