"""Settings: defaults, the YAML file, env overrides, and errors that point at the cause."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.settings import ENV_PREFIX, ConfigError, Settings, load_settings
from config.yaml_source import load_yaml_mapping, locate

TESTDATA = Path(__file__).parent / "testdata" / "settings"


def example(name: str) -> Path:
    path = TESTDATA / name
    assert path.is_file(), path
    return path


def config_error(path: Path | None, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={} if environ is None else environ)
    return str(caught.value)


# --- sources and precedence -------------------------------------------------------------


def test_defaults_without_file_or_environment() -> None:
    settings = load_settings(None, environ={})
    assert settings == Settings()
    assert settings.kafka_bootstrap == "127.0.0.1:9092"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.topic_prefix == "engagewatch"
    assert settings.partitions == 8
    assert settings.max_event_bytes == 64 * 1024
    assert settings.future_skew_s == 300.0
    assert settings.stakeholder_roles == ("champion", "admin", "executive")


def test_comment_only_file_keeps_defaults() -> None:
    assert load_settings(example("empty.yaml"), environ={}) == Settings()


def test_empty_file_keeps_defaults(tmp_path: Path) -> None:
    path = tmp_path / "engagewatch.yaml"
    path.write_text("", encoding="utf-8")
    assert load_settings(path, environ={}) == Settings()


def test_yaml_file_values_apply() -> None:
    settings = load_settings(example("good.yaml"), environ={})
    assert settings.kafka_bootstrap == "kafka-1:9092,kafka-2:9092"
    assert settings.redis_url == "redis://redis:6379/2"
    assert settings.topic_prefix == "acme-prod"
    assert settings.partitions == 12
    assert settings.replication_factor == 3
    assert settings.app_id == "engagewatch-prod"
    assert settings.table_store == "rocksdb://"
    assert settings.data_dir == "/var/lib/engagewatch"
    assert settings.web_host == "0.0.0.0"
    assert settings.web_port == 8080
    assert settings.log_level == "warning"
    assert settings.max_event_bytes == 32768
    assert settings.future_skew_s == 120.0
    assert settings.stakeholder_roles == ("champion", "sponsor")
    assert settings.batch_max_events == 500
    assert settings.batch_within_s == 0.25


def test_path_may_be_a_string() -> None:
    assert load_settings(str(example("good.yaml")), environ={}).partitions == 12


def test_config_file_from_environment() -> None:
    environ = {f"{ENV_PREFIX}CONFIG": str(example("good.yaml"))}
    assert load_settings(None, environ=environ).topic_prefix == "acme-prod"


def test_environment_overrides_the_file() -> None:
    environ = {
        "ENGAGEWATCH_KAFKA_BOOTSTRAP": "broker-a:9093,broker-b:9093",
        "ENGAGEWATCH_PARTITIONS": "24",
        "ENGAGEWATCH_STAKEHOLDER_ROLES": "champion, executive ,,vp",
    }
    settings = load_settings(example("good.yaml"), environ=environ)
    assert settings.kafka_bootstrap == "broker-a:9093,broker-b:9093"
    assert settings.partitions == 24
    assert settings.stakeholder_roles == ("champion", "executive", "vp")
    # Settings the environment does not name keep the file's values.
    assert settings.topic_prefix == "acme-prod"
    assert settings.replication_factor == 3


def test_environment_overrides_defaults() -> None:
    settings = load_settings(None, environ={"ENGAGEWATCH_REDIS_URL": "rediss://cache:6380/1"})
    assert settings.redis_url == "rediss://cache:6380/1"
    assert settings.partitions == 8


def test_environment_can_replace_a_bad_file_value() -> None:
    settings = load_settings(
        example("bad_partitions.yaml"), environ={"ENGAGEWATCH_PARTITIONS": "4"}
    )
    assert settings.partitions == 4


def test_variables_without_the_prefix_are_ignored() -> None:
    settings = load_settings(None, environ={"PARTITIONS": "3", "KAFKA_BOOTSTRAP": "x"})
    assert settings == Settings()


def test_a_misspelt_variable_stops_the_start_naming_the_setting_meant() -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(None, environ={"ENGAGEWATCH_PARTITONS": "16"})
    assert "ENGAGEWATCH_PARTITONS is not a setting; did you mean ENGAGEWATCH_PARTITIONS?" in str(
        error.value
    )
    # The scripts' own variables are no settings, and nowhere near one: left alone.
    scripts = {"ENGAGEWATCH_CACHE_DIR": "/c", "ENGAGEWATCH_TEST_STACK_DIR": "/s"}
    assert load_settings(None, environ=scripts) == Settings()


@pytest.mark.parametrize("value", ["champion, admin", "[champion, admin]", "['champion', 'admin']"])
def test_roles_from_a_variable_as_a_list_or_as_yaml_writes_one(value: str) -> None:
    settings = load_settings(None, environ={"ENGAGEWATCH_STAKEHOLDER_ROLES": value})
    assert settings.stakeholder_roles == ("champion", "admin")


def test_file_path_argument_beats_config_variable() -> None:
    environ = {f"{ENV_PREFIX}CONFIG": str(example("bad_partitions.yaml"))}
    assert load_settings(example("good.yaml"), environ=environ).partitions == 12


# --- derived values ---------------------------------------------------------------------


def test_topic_names_use_the_prefix() -> None:
    assert Settings().topic("events.dlq") == "engagewatch.events.dlq"
    assert Settings().topic("events") == "engagewatch.events"
    assert Settings(topic_prefix="acme-prod").topic("events.dlq") == "acme-prod.events.dlq"


@pytest.mark.parametrize(
    ("bootstrap", "url"),
    [
        ("127.0.0.1:9092", "kafka://127.0.0.1:9092"),
        ("a:1,b:2", "kafka://a:1;kafka://b:2"),
        (" a:1 , b:2 ,", "kafka://a:1;kafka://b:2"),
        ("[::1]:9092", "kafka://[::1]:9092"),
    ],
)
def test_kafka_url(bootstrap: str, url: str) -> None:
    assert Settings(kafka_bootstrap=bootstrap).kafka_url == url


def test_kafka_url_from_environment() -> None:
    settings = load_settings(None, environ={"ENGAGEWATCH_KAFKA_BOOTSTRAP": "k1:9092,k2:9092"})
    assert settings.kafka_url == "kafka://k1:9092;kafka://k2:9092"


# --- errors in the file -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "line", "field"),
    [
        ("bad_partitions.yaml", 3, "partitions"),
        ("bad_log_level.yaml", 5, "log_level"),
        ("bad_bootstrap.yaml", 1, "kafka_bootstrap"),
        ("bad_topic_prefix.yaml", 3, "topic_prefix"),
        ("bad_role.yaml", 4, "stakeholder_roles.2"),
    ],
)
def test_bad_value_names_file_line_and_field(name: str, line: int, field: str) -> None:
    path = example(name)
    message = config_error(path)
    assert f"{path}:{line}: {field}:" in message


def test_bad_value_says_what_was_expected() -> None:
    message = config_error(example("bad_partitions.yaml"))
    assert "greater than 0" in message
    assert "kafka-without-port" in config_error(example("bad_bootstrap.yaml"))


def test_unknown_key_names_the_key_and_its_line() -> None:
    path = example("unknown_key.yaml")
    message = config_error(path)
    assert f"{path}:3: partition_count: unknown setting" in message
    # The message lists what is allowed, so the user can spot the typo.
    assert "partitions" in message


def test_unknown_key_with_a_nested_value_names_the_key_line() -> None:
    path = example("unknown_key_block.yaml")
    assert f"{path}:3: kafka: unknown setting" in config_error(path)


def test_several_errors_are_all_reported(tmp_path: Path) -> None:
    path = tmp_path / "two.yaml"
    path.write_text("partitions: 0\nweb_port: 70000\n", encoding="utf-8")
    message = config_error(path)
    assert f"{path}:1: partitions:" in message
    assert f"{path}:2: web_port:" in message


def test_invalid_yaml_names_the_line() -> None:
    path = example("invalid_syntax.yaml")
    message = config_error(path)
    assert message.startswith(f"{path}:3: not valid YAML")


def test_invalid_yaml_in_a_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "tabs.yaml"
    path.write_text("partitions: 4\ntopic_prefix: acme\n\tapp_id: x\n", encoding="utf-8")
    assert config_error(path).startswith(f"{path}:3: not valid YAML")


@pytest.mark.parametrize(
    ("body", "line", "says"),
    [
        # The last of two equal keys used to win unseen: a second ``rules:`` block
        # silently dropped every rule of the first.
        (b"partitions: 4\ntopic_prefix: a\npartitions: 8\n", 3, "given twice (first on line 1)"),
        (b"a:\n  b: 1\n  b: 2\n", 3, "'b' is given twice"),
        # An impossible date: PyYAML's ValueError had no line, and was a traceback.
        (b"partitions: 4\nwhen: 2027-02-29\n", 2, "'2027-02-29' is not a date"),
        (b"partitions: 4\n# caf\xe9\n", 2, "not UTF-8 text"),
    ],
)
def test_mistakes_yaml_lets_pass_are_refused_at_their_line(
    tmp_path: Path, body: bytes, line: int, says: str
) -> None:
    path = tmp_path / "settings.yaml"
    path.write_bytes(body)
    message = config_error(path)
    assert message.startswith(f"{path}:{line}: "), message
    assert says in message


def test_merge_keys_still_override(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("base: &b {partitions: 4}\nother:\n  <<: *b\n  partitions: 8\n")
    assert load_yaml_mapping(path)["other"] == {"partitions": 8}


@pytest.mark.parametrize(("name", "kind"), [("not_a_mapping.yaml", "list"), ("scalar.yaml", "str")])
def test_top_level_must_be_a_mapping(name: str, kind: str) -> None:
    path = example(name)
    message = config_error(path)
    assert message.startswith(f"{path}:1: expected a mapping")
    assert kind in message


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    message = config_error(path)
    assert message.startswith(f"{path}: cannot read config file")


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


# --- errors in the environment ----------------------------------------------------------


@pytest.mark.parametrize("value", ["abc", "0", "-3", "10001", "4.5"])
def test_bad_partitions_variable_names_the_variable(value: str) -> None:
    message = config_error(None, {"ENGAGEWATCH_PARTITIONS": value})
    assert "environment variable ENGAGEWATCH_PARTITIONS: partitions:" in message


def test_bad_variable_is_blamed_not_the_file() -> None:
    path = example("good.yaml")
    message = config_error(path, {"ENGAGEWATCH_KAFKA_BOOTSTRAP": "no-port"})
    assert "environment variable ENGAGEWATCH_KAFKA_BOOTSTRAP: kafka_bootstrap:" in message
    assert str(path) not in message


def test_file_and_variable_errors_are_reported_together() -> None:
    path = example("bad_log_level.yaml")
    message = config_error(path, {"ENGAGEWATCH_PARTITIONS": "many"})
    assert f"{path}:5: log_level:" in message
    assert "ENGAGEWATCH_PARTITIONS" in message


# --- the YAML helpers -------------------------------------------------------------------


def test_load_yaml_mapping_returns_the_mapping() -> None:
    data = load_yaml_mapping(example("unknown_key.yaml"))
    assert data == {"topic_prefix": "acme", "partitions": 4, "partition_count": 8}


@pytest.mark.parametrize(
    ("loc", "line"),
    [
        (("topic_prefix",), 4),
        (("partitions",), 5),
        (("stakeholder_roles", 0), 16),
        (("stakeholder_roles", 1), 17),
        (("stakeholder_roles", 9), 16),  # beyond the list: the list itself
        (("not_there",), 2),  # absent: the document (past the leading comment)
    ],
)
def test_locate(loc: tuple[str | int, ...], line: int) -> None:
    path = example("good.yaml")
    assert locate(path, loc) == f"{path}:{line}"


def test_locate_in_an_unreadable_file_names_only_the_file(tmp_path: Path) -> None:
    path = tmp_path / "gone.yaml"
    assert locate(path, ("partitions",)) == str(path)
