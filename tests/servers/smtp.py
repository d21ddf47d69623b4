"""A local submission server: aiosmtpd with STARTTLS and AUTH required, like a real relay.

The certificate is self-signed for 127.0.0.1 and made per server by the openssl CLI;
clients trust it through :attr:`SmtpServer.client_tls`. AUTH is only offered after
STARTTLS (``auth_require_tls``), one user/password is accepted and anything else gets
``535 5.7.8``. Replies to RCPT and DATA can be scripted (``451`` transient, ``550``
permanent) and individual recipients refused. ``starttls=False`` builds the server a
client must refuse to talk to: no STARTTLS, AUTH offered in plaintext.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections import deque
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from pathlib import Path
from types import TracebackType
from typing import Self

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.conftest import free_port

__all__ = ["PASSWORD", "USERNAME", "Mail", "SmtpServer", "self_signed_cert"]

USERNAME = "alerts@example.com"
PASSWORD = "correct-horse-battery-staple"


@dataclass(frozen=True)
class Mail:
    """One accepted message: the envelope and the parsed message."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    tls: bool
    """Whether the session was encrypted when the message arrived."""


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate and key for 127.0.0.1 (and localhost), valid one day."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl CLI is needed to make the test server's certificate")
    cert, key = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-nodes", "-days", "1",
            "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-keyout", str(key), "-out", str(cert),
            "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    return cert, key


class SmtpServer:
    """``async with SmtpServer(tmp_path) as smtp``: ``smtp.port``, ``smtp.client_tls``.

    Read ``received`` (accepted mail) and ``logins`` (user, accepted) after a send;
    script with ``rcpt_replies``/``data_replies`` (one reply per command) or
    ``refuse[address] = "550 ..."``.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        directory: Path,
        *,
        starttls: bool = True,
        users: dict[str, str] | None = None,
    ) -> None:
        self.directory = directory
        self.starttls = starttls
        self.users = {USERNAME: PASSWORD} if users is None else users
        self.port = free_port()
        self.received: list[Mail] = []
        self.logins: list[tuple[str, bool]] = []
        self.rcpt_replies: deque[str] = deque()
        self.data_replies: deque[str] = deque()
        self.refuse: dict[str, str] = {}
        self.client_tls: ssl.SSLContext | None = None
        self._controller: Controller | None = None

    async def __aenter__(self) -> Self:
        tls: ssl.SSLContext | None = None
        if self.starttls:
            cert, key = await asyncio.to_thread(self_signed_cert, self.directory)
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(cert, key)
            self.client_tls = ssl.create_default_context(cafile=str(cert))
        self._controller = Controller(
            self,
            hostname=self.host,
            port=self.port,
            ready_timeout=10.0,
            server_hostname="smtp.engagewatch.test",
            tls_context=tls,
            require_starttls=self.starttls,
            auth_required=True,
            auth_require_tls=self.starttls,
            authenticator=self._authenticate,
        )
        # Controller runs its own loop in a thread; starting blocks until it is ready.
        await asyncio.to_thread(self._controller.start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._controller is not None:
            await asyncio.to_thread(self._controller.stop)

    def _authenticate(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: object,
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user, password = auth_data.login.decode(), auth_data.password.decode()
        accepted = self.users.get(user) == password
        self.logins.append((user, accepted))
        return AuthResult(success=accepted, handled=False)

    async def handle_RCPT(  # noqa: N802 - aiosmtpd calls hooks by these names
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        if self.rcpt_replies:
            return self.rcpt_replies.popleft()
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        if self.data_replies:
            return self.data_replies.popleft()
        raw = envelope.original_content or b""
        message = BytesParser(policy=default_policy, _class=EmailMessage).parsebytes(raw)
        tls = session.ssl is not None
        self.received.append(Mail(str(envelope.mail_from), tuple(envelope.rcpt_tos), message, tls))
        return "250 2.0.0 Message accepted for delivery"
