"""config/rules.schema.json (for editors) must match the rule models it documents."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from alerts.rules import json_schema, load_rules
from config.yaml_source import ConfigError

SCHEMA = Path(__file__).resolve().parents[2] / "config" / "rules.schema.json"


def test_the_published_json_schema_is_up_to_date() -> None:
    published = json.loads(SCHEMA.read_text())
    assert published == json.loads(json.dumps(json_schema())), (
        "regenerate it: .venv/bin/python -m alerts.rules > config/rules.schema.json"
    )
    assert published["$defs"]["SilenceRule"]["additionalProperties"] is False


def test_the_schema_takes_what_the_loader_takes_and_refuses_what_it_refuses(
    tmp_path: Path,
) -> None:
    """Editors check files against the schema: a documented form it refused ("3d")
    would be flagged wrongly, a name it let through would only fail at start."""
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    shipped = yaml.safe_load((SCHEMA.parent / "rules.yaml").read_text())
    assert list(validator.iter_errors(json.loads(json.dumps(shipped, default=str)))) == []
    nps = {"name": "detractor", "kind": "nps"}
    durations = {"rules": [{**nps, "for": "1d", "repeat_interval": "24h"}]}
    assert list(validator.iter_errors(durations)) == []
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(durations))
    assert load_rules(path).rules[0].repeat_interval == 86_400
    for refused in (
        {"rules": [{**nps, "name": "Detractor"}]},
        {"rules": [{**nps, "for": "3dd"}]},
        {"calendars": {"Year End": {"days": ["12-24"]}}, "rules": [nps]},
    ):
        assert list(validator.iter_errors(refused)), refused
        path.write_text(yaml.safe_dump(refused))
        with pytest.raises(ConfigError):
            load_rules(path)
