"""``engagewatch triage``: the triage API from a terminal (docs/triage.md).

Talks HTTP to any worker (``--url``; default: ``public_url``, else the worker's
advertised URL), prints aligned tables or, with ``--json``, the API's JSON. Exit codes:
0 done, 1 the API or the network said no, 2 a usage error (bad option, no token).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote, urlencode

from config.settings import ConfigError, Settings

__all__ = ["add_parser", "run"]

TIMEOUT_S = 15.0
SUMMARY_WIDTH = 70


class CliError(Exception):
    """Ends the command with a message and an exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def add_parser(sub: Any) -> None:
    """Add ``triage`` and its subcommands to the ``engagewatch`` parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="a worker's base URL (default: public_url or the worker's)")
    common.add_argument("--token", help="API token for writes (default: $ENGAGEWATCH_API_TOKEN)")
    common.add_argument("--json", action="store_true", help="print the API's JSON")
    who = argparse.ArgumentParser(add_help=False)
    who.add_argument("--author", default=_user(), help="who does it (default: your user name)")

    triage = sub.add_parser("triage", help="list and triage silent accounts and open alerts")
    verbs = triage.add_subparsers(dest="triage_command", required=True, metavar="COMMAND")
    silent = verbs.add_parser("silent", parents=[common], help="ranked silent/at-risk accounts")
    silent.add_argument("--limit", type=int, default=20)
    silent.add_argument("--owner")
    silent.add_argument("--segment")
    silent.add_argument("--tier", choices=("green", "yellow", "red"))
    silent.add_argument("--include-snoozed", action="store_true")
    account = verbs.add_parser("account", parents=[common], help="one account and its history")
    account.add_argument("account_id", metavar="ID")
    alerts = verbs.add_parser("alerts", parents=[common], help="open alerts")
    alerts.add_argument("--rule")
    alerts.add_argument("--severity", choices=("info", "warning", "critical"))
    alerts.add_argument("--status", choices=("firing", "acknowledged", "unacknowledged"))
    alerts.add_argument("--account", dest="account_id")
    alerts.add_argument("--owner")
    alerts.add_argument("--include-snoozed", action="store_true")
    alerts.add_argument("--limit", type=int, default=100, help="alerts per page (1-500)")
    alerts.add_argument("--offset", type=int, default=0, help="skip this many (a page's next)")
    ack = verbs.add_parser("ack", parents=[common, who], help="acknowledge an alert")
    ack.add_argument("fingerprint", metavar="FINGERPRINT")
    ack.add_argument("--comment", default="")
    snooze = verbs.add_parser("snooze", parents=[common, who], help="snooze an alert")
    snooze.add_argument("fingerprint", metavar="FINGERPRINT")
    until = snooze.add_mutually_exclusive_group(required=True)
    until.add_argument("--until", help="RFC 3339, e.g. 2026-12-01T00:00Z")
    until.add_argument("--for", dest="duration", help="a duration: 90m, 24h, 3d, 2w")
    snooze.add_argument("--reason", required=True)
    snooze.add_argument("--scope", choices=("alert", "rule", "account"), default="alert")
    unsnooze = verbs.add_parser("unsnooze", parents=[common, who], help="remove an alert's snoozes")
    unsnooze.add_argument("fingerprint", metavar="FINGERPRINT")
    resolve = verbs.add_parser("resolve", parents=[common, who], help="resolve an alert by hand")
    resolve.add_argument("fingerprint", metavar="FINGERPRINT")
    resolve.add_argument("--reason", required=True)


def run(settings: Settings, args: argparse.Namespace) -> int:
    command = _COMMANDS[args.triage_command]
    try:
        client = Client(_base_url(settings, args), lambda: _token(settings, args))
        body = command(client, args)
    except CliError as exc:
        print(f"engagewatch triage: {exc}", file=sys.stderr)
        return exc.code
    if args.json:
        print(json.dumps(body, indent=2, sort_keys=True))
    else:
        print(_RENDER[args.triage_command](body))
    return 0


# --- HTTP --------------------------------------------------------------------------------


class Client:
    """The triage API over urllib: JSON in, JSON out, errors as :class:`CliError`."""

    def __init__(self, base_url: str, token: Callable[[], str | None]) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        """Read when first needed: reads need no token, so a missing one stops no list."""

    def get(self, path: str, **query: Any) -> Any:
        # A flag that is off, or an option not given, is left out; 0 is a value.
        params = {
            k: _param(v) for k, v in query.items() if v is not None and v is not False and v != ""
        }
        suffix = f"?{urlencode(params)}" if params else ""
        try:
            token = self.token()
        except CliError:  # e.g. an unreadable token file: most reads need no token
            token = None  # (where they do, the worker answers 401)
        return self._call("GET", path + suffix, None, token)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        token = self.token()
        if not token:
            raise CliError("this needs the API token: pass --token or set ENGAGEWATCH_API_TOKEN", 2)
        return self._call("POST", path, {k: v for k, v in body.items() if v is not None}, token)

    def _call(self, method: str, path: str, body: dict[str, Any] | None, token: str | None) -> Any:
        url = f"{self.base_url}/api/v1{path}"
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise _http_error(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CliError(
                f"cannot reach {self.base_url}: {reason}; is a worker running there? (--url)"
            ) from None


def _http_error(exc: urllib.error.HTTPError) -> CliError:
    try:
        body = json.loads(exc.read())
        message = f"{body.get('error', exc.reason)}: {body.get('detail', '')}".rstrip(": ")
    except (ValueError, AttributeError):
        message = str(exc.reason)
    hint = {401: " (check --token / ENGAGEWATCH_API_TOKEN)"}.get(exc.code, "")
    return CliError(f"HTTP {exc.code} {message}{hint}", 2 if exc.code == 400 else 1)


def _param(value: Any) -> str:
    return "true" if value is True else str(value)


def _base_url(settings: Settings, args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url)
    return (
        settings.public_url
        or settings.advertised_url
        or f"http://{settings.web_host}:{settings.web_port}"
    )


def _token(settings: Settings, args: argparse.Namespace) -> str | None:
    if args.token:
        return str(args.token)
    from stream.triage_api import load_api_token  # the workers' rule: file, then variable

    try:
        return load_api_token(settings)
    except ConfigError as exc:
        raise CliError(str(exc), 2) from None


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return os.environ.get("USER") or "cli"


# --- commands ----------------------------------------------------------------------------


def _silent(client: Client, args: argparse.Namespace) -> Any:
    return client.get(
        "/accounts/silent",
        limit=args.limit,
        owner=args.owner,
        segment=args.segment,
        tier=args.tier,
        include_snoozed=args.include_snoozed,
    )


def _account(client: Client, args: argparse.Namespace) -> Any:
    return client.get(f"/accounts/{quote(args.account_id, safe='')}")


def _alerts(client: Client, args: argparse.Namespace) -> Any:
    return client.get(
        "/alerts",
        rule=args.rule,
        severity=args.severity,
        status=args.status,
        account_id=args.account_id,
        owner=args.owner,
        include_snoozed=args.include_snoozed,
        limit=args.limit,
        offset=args.offset,
    )


def _write(verb: str, *fields: str) -> Callable[[Client, argparse.Namespace], Any]:
    def write(client: Client, args: argparse.Namespace) -> Any:
        body = {"author": args.author, **{name: getattr(args, name) for name in fields}}
        return client.post(f"/alerts/{quote(args.fingerprint, safe='')}/{verb}", body)

    return write


_COMMANDS: dict[str, Callable[[Client, argparse.Namespace], Any]] = {
    "silent": _silent,
    "account": _account,
    "alerts": _alerts,
    "ack": _write("ack", "comment"),
    "snooze": _write("snooze", "until", "duration", "reason", "scope"),
    "unsnooze": _write("unsnooze"),
    "resolve": _write("resolve", "reason"),
}


# --- output ------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns, two spaces apart; ``-`` for a missing value."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}" if value >= 1000 else f"{value:.1f}"
    return str(value).replace("\n", " ")


def _short(text: str, width: int = SUMMARY_WIDTH) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _render_silent(body: Any) -> str:
    accounts = body["accounts"]
    if not accounts:
        return "No silent or at-risk accounts."
    rows = [
        (
            n,
            e["name"] + (" (snoozed)" if e.get("snoozed") else ""),
            e["account_id"],
            e.get("arr"),
            e.get("renewal_date"),
            e.get("owner"),
            None if e.get("days_silent") is None else f"{e['days_silent']} ({e['usual_gap_days']})",
            e.get("tier"),
            ",".join(a["rule"] for a in e["open_alerts"]),
            e.get("priority"),
        )
        for n, e in enumerate(accounts, 1)
    ]
    headers = (
        "#",
        "ACCOUNT",
        "ID",
        "ARR",
        "RENEWAL",
        "OWNER",
        "SILENT (USUAL)",
        "TIER",
        "OPEN ALERTS",
        "PRIORITY",
    )
    return table(headers, rows)


def _alert_rows(alerts: Sequence[dict[str, Any]], with_account: bool = True) -> str:
    if not alerts:
        return "No open alerts."
    rows = []
    for a in alerts:
        state = "snoozed" if a.get("snoozed") else "acked" if a.get("ack") else "open"
        if a.get("resolve_requested"):
            state += ", resolving"
        account = [a.get("account_name")] if with_account else []
        rows.append(
            [
                a["severity"],
                *account,
                a["rule"],
                a.get("starts_at"),
                state,
                a["fingerprint"],
                _short(a.get("summary", "")),
            ]
        )
    headers = [
        "SEVERITY",
        *(["ACCOUNT"] if with_account else []),
        "RULE",
        "SINCE",
        "STATE",
        "FINGERPRINT",
        "SUMMARY",
    ]
    return table(headers, rows)


def _render_alerts(body: Any) -> str:
    alerts, total, offset = body["alerts"], body["total"], body.get("offset", 0)
    after = body.get("next_offset")
    if not alerts:
        return (
            f"No alerts from --offset {offset}: {total} open in all."
            if total
            else "No open alerts."
        )
    if not offset and after is None:
        return _alert_rows(alerts)  # the whole list
    shown = f"Alerts {offset + 1}-{offset + len(alerts)} of {total}"
    more = f"; the next page: --offset {after}" if after is not None else " (the last page)"
    return f"{_alert_rows(alerts)}\n{shown}{more}."


def _render_account(body: Any) -> str:
    entry = body.get("account") or {}
    snapshot = body.get("snapshot") or {}
    metrics = snapshot.get("metrics") or {}
    facts = [
        ("account", entry.get("name") or (snapshot.get("account") or {}).get("name")),
        ("arr", entry.get("arr")),
        ("renewal", entry.get("renewal_date")),
        ("owner", entry.get("owner")),
        ("segment", entry.get("segment")),
        ("tier", entry.get("tier")),
        ("days silent (usual)", f"{entry.get('days_silent')} ({entry.get('usual_gap_days')})"),
        ("last active day", entry.get("last_active_day")),
        ("priority", entry.get("priority")),
        ("active days (28)", metrics.get("active_days_28d")),
        ("daily usage rate", metrics.get("daily_usage_rate")),
    ]
    parts = [
        table(("FIELD", "VALUE"), facts),
        "",
        "Open alerts:",
        _alert_rows(body["alerts"], False),
    ]
    history = [
        (
            h.get("at"),
            h.get("kind"),
            h.get("rule"),
            h.get("author"),
            _short(h.get("reason") or h.get("comment") or h.get("summary") or ""),
        )
        for h in body["history"]
    ]
    parts += ["", "History (newest first):"]
    parts.append(table(("AT", "WHAT", "RULE", "WHO", "DETAIL"), history) if history else "none")
    if body.get("snapshot_error"):
        parts += ["", f"(live snapshot: {body['snapshot_error']})"]
    return "\n".join(parts)


def _render_write(body: Any) -> str:
    if "ack" in body:
        return f"acknowledged {body['ack']['fingerprint']} as {body['ack']['author']}"
    if "silence" in body:
        s = body["silence"]
        return f"snoozed until {s['until']} (silence {s['id']})"
    if "removed" in body:
        return f"removed {len(body['removed'])} snooze(s)"
    return f"resolve requested: {body.get('detail', '')}"


_RENDER: dict[str, Callable[[Any], str]] = {
    "silent": _render_silent,
    "account": _render_account,
    "alerts": _render_alerts,
    "ack": _render_write,
    "snooze": _render_write,
    "unsnooze": _render_write,
    "resolve": _render_write,
}
