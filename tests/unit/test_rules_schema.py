"""config/rules.schema.json (for editors) must match the rule models it documents."""

from __future__ import annotations

import json
from pathlib import Path

from alerts.rules import json_schema

SCHEMA = Path(__file__).resolve().parents[2] / "config" / "rules.schema.json"


def test_the_published_json_schema_is_up_to_date() -> None:
    published = json.loads(SCHEMA.read_text())
    assert published == json.loads(json.dumps(json_schema())), (
        "regenerate it: .venv/bin/python -m alerts.rules > config/rules.schema.json"
    )
    assert published["$defs"]["SilenceRule"]["additionalProperties"] is False
