"""``engagewatch check``: validate what a worker would start with, without starting one.

A worker refuses a bad rules or receivers file at start (the error names the file, the
line and the field); this finds the same errors before a deploy, in a config
repository's CI, say, as ``promtool check rules`` does for Prometheus. Nothing is
connected to: only the files and the environment are read.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from config.settings import ConfigError, Settings

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """Add ``check`` to the ``engagewatch`` parser."""
    check = sub.add_parser(
        "check",
        help="validate the settings, rules and receivers a worker would start with",
    )
    check.add_argument("--rules", type=Path, help="this rules file instead of the configured one")
    check.add_argument(
        "--receivers", type=Path, help="this receivers file instead of the configured one"
    )


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Print what each file holds; exit 2 at the first one that is invalid."""
    from alerts.delivery.config import load_receivers
    from alerts.rules import load_rules
    from stream.app import rules_path, state_policy
    from stream.notify import receivers_path
    from stream.triage_api import load_api_token

    print("settings: valid")  # the command line loaded them before this ran
    rules_file = args.rules or rules_path(settings)
    try:
        token = load_api_token(settings)  # read at start: a missing file stops the worker
        print(f"api token: {'set' if token else 'none (triage writes are refused)'}")
        rules = load_rules(rules_file).rules
        state_policy(settings, rules)  # a horizon shorter than the rules read stops a worker
        print(
            f"rules: {rules_file}: {_many(len(rules), 'rule')} ({_counted(r.kind for r in rules)})"
        )
        if args.receivers is None and not settings.notifier_enabled:
            print("receivers: not checked (notifier_enabled is false)")
            return 0
        receivers_file = args.receivers or receivers_path(settings)
        delivery = load_receivers(receivers_file)
    except ConfigError as exc:
        print(f"engagewatch: {exc}", file=sys.stderr)
        return 2
    kinds = _counted(receiver.type for receiver in delivery.receivers)
    print(f"receivers: {receivers_file}: {_many(len(delivery.receivers), 'receiver')} ({kinds})")
    return 0


def _many(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _counted(names: Any) -> str:
    """``silence 2, drop 2, nps 1``: in first-seen order."""
    return ", ".join(f"{name} {count}" for name, count in Counter(names).items())
