"""The bearer token that guards the worker's HTTP routes.

Writes (ack, snooze, resolve) always need it; reads need it when
``api_reads_require_token`` is set, on every route that shows account data: the triage
API, ``/accounts/{id}`` and ``/portfolio/adoption``. The page, its assets, the OpenAPI
document and ``/metrics`` (labels from fixed sets, no account data) stay open. A worker
that forwards a read to another (routing, the portfolio's fan-out, the drill-down's
live snapshot) passes the caller's ``Authorization`` on, so the owner checks it too.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from pathlib import Path

from faust.web import Request, Response, View

from config.settings import ConfigError, Settings

__all__ = ["Access", "forwarded_auth", "load_api_token", "refusal_response"]


def load_api_token(settings: Settings) -> str | None:
    """The write token: ``api_token_file``'s contents (stripped) win over ``api_token``.

    An empty token counts as none: an empty bearer must never open the writes.
    """
    token = settings.api_token
    if settings.api_token_file:
        try:
            token = Path(settings.api_token_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"api_token_file: cannot read {settings.api_token_file}: {exc.strerror}"
            ) from None
    token = (token or "").strip()
    return token or None


class Access:
    """The bearer-token gate for writes (and reads when ``reads_require_token``)."""

    def __init__(self, token: str | None, reads_require_token: bool) -> None:
        self._token = token.encode() if token else None
        self._reads_require_token = reads_require_token

    def refusal(self, headers: Mapping[str, str], *, write: bool) -> tuple[int, str, str] | None:
        """``(status, error, detail)`` when the request may not go on, else ``None``."""
        if not write and not self._reads_require_token:
            return None
        if self._token is None:
            what = "writes" if write else "reads"
            return 403, f"{what} disabled: no api token configured", _NO_TOKEN_HELP
        given = headers.get("Authorization", "")
        scheme, _, credentials = given.partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            return 401, "unauthorized", "send the API token as 'Authorization: Bearer <token>'"
        if not hmac.compare_digest(credentials.strip().encode(), self._token):
            return 401, "unauthorized", "the API token is wrong"
        return None


_NO_TOKEN_HELP = "set ENGAGEWATCH_API_TOKEN or api_token_file on the workers"


def refusal_response(
    view: View, access: Access, request: Request, *, write: bool = False
) -> Response | None:
    """The JSON 401/403 for a request ``access`` refuses (``None``: it may go on)."""
    refused = access.refusal(request.headers, write=write)
    if refused is None:
        return None
    status, error, detail = refused
    headers = {"WWW-Authenticate": 'Bearer realm="engagewatch"'} if status == 401 else {}
    response: Response = view.json(
        {"error": error, "detail": detail}, status=status, headers=headers
    )
    return response


def forwarded_auth(request: Request) -> dict[str, str]:
    """The caller's ``Authorization``, for a request made on its behalf to a worker."""
    given = request.headers.get("Authorization")
    return {"Authorization": given} if given else {}
