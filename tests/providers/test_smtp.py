"""E-mail through SMTP against a real mail server on loopback (aiosmtpd): plain, STARTTLS with a
certificate from a test authority (trustme), implicit TLS, and AUTH; the message as it arrives
(headers, parts, encoded subject, one-click unsubscribe); every refusal the server can give
and what each means for the message; one kept connection, opened again when the server has
dropped it; and the health check."""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import ssl
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage, MIMEPart
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SmtpServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from app.domain.messages import Channel, MessageStatus
from app.providers import KINDS
from app.providers.http import (
    CredentialsRefused,
    OutcomeUnknown,
    ProviderPaused,
    ProviderUnreachable,
    ResilientClient,
)
from app.providers.messaging import CannotTell, MessageChannel, MessageRefused, OutgoingMessage
from app.providers.smtp import SMTP, SmtpProvider, TlsFailed, TryLater, message_id
from app.services import Services

FROM = "office@riverside-music.example"
USER, PASSWORD = "office@riverside-music.example", "correct horse battery staple"


# --- the mail server --------------------------------------------------------------------------


@dataclass
class Received:
    peer: Any  # (host, port) of the client: one per connection
    mail_from: str
    rcpt_tos: list[str]
    mail_options: list[str]
    content: bytes

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class Mailbox:
    """aiosmtpd's handler: takes mail, answers what a test scripts, and keeps what it took."""

    received: list[Received] = field(default_factory=list)
    data_started: int = 0  # DATA commands whose message reached the server
    rcpt_replies: dict[str, str] = field(default_factory=dict)  # address -> SMTP reply
    data_reply: str = ""  # e.g. "554 5.7.1 Rejected as spam"
    data_delay: float = 0.0
    mail_replies: list[str] = field(default_factory=list)  # replies to the next MAIL commands

    async def handle_MAIL(
        self,
        server: SmtpServer,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self.mail_replies:
            return self.mail_replies.pop(0)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SmtpServer,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SmtpServer, session: Session, envelope: Envelope) -> str:
        self.data_started += 1
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        if self.data_reply:
            return self.data_reply
        content = envelope.original_content or b""
        self.received.append(
            Received(
                session.peer,
                str(envelope.mail_from),
                list(envelope.rcpt_tos),
                list(envelope.mail_options),
                content,
            )
        )
        return "250 2.0.0 Ok: queued as 4Q1x2y"


class LoopbackController(Controller):
    """aiosmtpd's threaded controller on 127.0.0.1 and a free port the system picks."""

    def __init__(self, handler: Mailbox, **kwargs: Any) -> None:
        super().__init__(handler, hostname="127.0.0.1", port=0, **kwargs)

    def _trigger_server(self) -> None:
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


@dataclass
class MailServer:
    mailbox: Mailbox
    port: int


@dataclass
class Authority:
    ca: trustme.CA
    ca_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        return context


@pytest.fixture
def authority(tmp_path: Path) -> Authority:
    ca = trustme.CA()
    ca_file = tmp_path / "school-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return Authority(ca, ca_file)


def authenticator(
    server: SmtpServer, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    assert isinstance(auth_data, LoginPassword)
    ok = auth_data.login.decode() == USER and auth_data.password.decode() == PASSWORD
    # Not handled here: aiosmtpd answers a refusal with 535 5.7.8 itself.
    return AuthResult(success=ok, handled=False)


ServerFactory = Callable[..., MailServer]


@pytest.fixture
def mail_server() -> Iterator[ServerFactory]:
    """Starts aiosmtpd servers with the given options; all stopped after the test."""
    started: list[Controller] = []

    def start(**options: Any) -> MailServer:
        mailbox = Mailbox()
        controller = LoopbackController(mailbox, **options)
        controller.start()
        started.append(controller)
        return MailServer(mailbox, controller.port)

    yield start
    for controller in started:
        controller.stop()


@pytest.fixture
async def connect() -> AsyncIterator[Callable[..., SmtpProvider]]:
    """Builds SMTP connections as the connection service does (spec check, resilient client,
    factory); each is closed after the test."""
    made: list[SmtpProvider] = []

    def build(server: MailServer | None = None, *, port: int = 0, **values: Any) -> SmtpProvider:
        password = values.pop("password", None)
        config, secrets, errors = SMTP.check(
            {
                "host": "127.0.0.1",
                "port": server.port if server else port,
                "security": "none",
                "from_address": FROM,
                "from_name": "Riverside Music School",
                "timeout": 5,
                **values,
            },
            {"password": password} if password else {},
        )
        assert not errors, errors
        client = ResilientClient(
            connection_id=0,
            name="School mail",
            base_url=SMTP.base_url(config),
            policy=SMTP.policy,
            secrets=list(secrets.values()),
        )
        provider = SMTP.factory(SMTP, client, config, secrets)
        assert isinstance(provider, SmtpProvider)
        made.append(provider)
        return provider

    yield build
    for provider in made:
        await provider.aclose()


def letter(to: str = "parent@example.com", **fields: Any) -> OutgoingMessage:
    values: dict[str, Any] = {
        "key": f"msg-{uuid.uuid4().hex[:12]}",
        "channel": Channel.EMAIL,
        "to": to,
        "subject": "Lesson reminder",
        "text": "Piano on Tuesday at 16:00.\n",
        **fields,
    }
    return OutgoingMessage(**values)


def body(part: MIMEPart) -> str:
    """A part's decoded text with the wire's CRLF line ends as Python writes them."""
    return str(part.get_content()).replace("\r\n", "\n")


# --- what arrives ---------------------------------------------------------------------------------


async def test_a_message_arrives_as_a_proper_email_with_both_parts_and_one_click_unsubscribe(
    mail_server: ServerFactory, connect: Callable[..., SmtpProvider]
) -> None:
    server = mail_server()
    provider = connect(server, reply_to="bursar@riverside-music.example")
    assert isinstance(provider, MessageChannel)
    unsubscribe = "https://riverside-music.example/unsubscribe?t=" + "a1b2c3" * 20
    message = letter(
        subject="Rechnung für März – bitte bezahlen",
        text="Die Rechnung für März ist da.\n",
        html="<p>Die Rechnung für <b>März</b> ist da.</p>",
        unsubscribe_url=unsubscribe,
    )

    sent = await provider.send(message)

    assert sent.status is MessageStatus.SENT
    assert sent.provider_id == message_id(message.key, FROM)
    assert sent.provider_id == f"<{message.key}@riverside-music.example>"
    [got] = server.mailbox.received
    assert got.mail_from == FROM
    assert got.rcpt_tos == ["parent@example.com"]
    assert any(option.upper().startswith("SIZE=") for option in got.mail_options)
    mail = got.message
    assert mail["Subject"] == "Rechnung für März – bitte bezahlen"
    assert b"=?utf-8?" in got.content.split(b"\r\n\r\n")[0]  # encoded on the wire (RFC 2047)
    assert mail["From"].addresses[0].display_name == "Riverside Music School"
    assert mail["From"].addresses[0].addr_spec == FROM
    assert mail["To"] == "parent@example.com"
    assert mail["Reply-To"] == "bursar@riverside-music.example"
    assert mail["Message-ID"] == sent.provider_id
    assert mail["Date"].datetime is not None
    # One line, exactly as given: mail clients read it as an address, not encoded words.
    assert f"List-Unsubscribe: <{unsubscribe}>\r\n".encode() in got.content
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert mail.get_content_type() == "multipart/alternative"
    text, html = mail.iter_parts()
    assert text.get_content_type() == "text/plain"
    assert body(text) == "Die Rechnung für März ist da.\n"
    assert html.get_content_type() == "text/html"
    assert "<b>März</b>" in body(html)
    assert max(got.content) < 128  # 7-bit clean: no server needs 8BITMIME


async def test_a_text_only_message_is_one_plain_part_without_list_headers(
    mail_server: ServerFactory, connect: Callable[..., SmtpProvider]
) -> None:
    server = mail_server()
    await connect(server).send(letter())
    mail = server.mailbox.received[0].message
    assert mail.get_content_type() == "text/plain"
    assert body(mail) == "Piano on Tuesday at 16:00.\n"
    assert mail["List-Unsubscribe"] is None


async def test_a_message_written_only_in_html_gets_a_readable_text_part(
    mail_server: ServerFactory, connect: Callable[..., SmtpProvider]
) -> None:
    server = mail_server()
    html = '<p>Pay <a href="https://pay.example/i/7">here</a>.</p><style>p{}</style><p>Thanks</p>'
    await connect(server).send(letter(text="", html=html))
    text, _html = server.mailbox.received[0].message.iter_parts()
    assert body(text) == "Pay here (https://pay.example/i/7).\n\nThanks\n"


async def test_an_address_outside_ascii_goes_with_smtputf8(
    mail_server: ServerFactory, connect: Callable[..., SmtpProvider]
) -> None:
    server = mail_server()
    await connect(server).send(letter(to="jürgen@example.com"))
    [got] = server.mailbox.received
    assert got.rcpt_tos == ["jürgen@example.com"]
    assert "SMTPUTF8" in [option.upper() for option in got.mail_options]


# --- security and sign-in -------------------------------------------------------------------------


async def test_a_plain_server_with_a_login_takes_the_message_from_the_signed_in_account(
    mail_server: ServerFactory, connect: Callable[..., SmtpProvider]
) -> None:
    server = mail_server(authenticator=authenticator, auth_require_tls=False)
    provider = connect(server, username=USER, password=PASSWORD)
    await provider.send(letter())
    assert len(server.mailbox.received) == 1


async def test_starttls_with_the_schools_own_certificate_authority(
    mail_server: ServerFactory, connect: Callable[..., SmtpProvider], authority: Authority
) -> None:
    server = mail_server(
        tls_context=authority.server_context(),
        require_starttls=True,
        authenticator=authenticator,
    )
    provider = connect(
        server,
        security="starttls",
        ca_file=str(authority.ca_file),
        username=USER,
        password=PASSWORD,
    )
    result = await provider.check_health()
    assert result.ok, result.detail
    assert "STARTTLS" in result.detail
    await provider.send(letter())
    assert len(server.mailbox.received) == 1


async def test_implicit_tls_on_its_own_port(
    mail_server: ServerFactory, connect: Callable[..., SmtpProvider], authority: Authority
) -> None:
    server = mail_server(ssl_context=authority.server_context())
    provider = connect(server, security="tls", ca_file=str(authority.ca_file))
    await provider.send(letter())
    assert len(server.mailbox.received) == 1


async def test_a_certificate_nobody_vouches_for_is_refused_with_what_to_do(
    mail_server: ServerFactory, connect: Callable[..., SmtpProvider], authority: Authority
) -> None:
    server = mail_server(tls_context=authority.server_context(), require_starttls=True)
    provider = connect(server, security="starttls")  # trusts only the public authorities
    with pytest.raises(TlsFailed, match=r"cannot be trusted.*certificate authority file"):
        await provider.send(letter())
    assert server.mailbox.received == []


async def test_tls_against_a_server_that_starts_in_plain_text_says_to_check_the_setting(
    mail_server: ServerFactory, connect: Callable[..., SmtpProvider], authority: Authority
) -> None:
    server = mail_server()
    provider = connect(server, security="tls", ca_file=str(authority.ca_file), timeout=2)
    with pytest.raises(TlsFailed, match=r"Check the security setting.*STARTTLS"):
        await provider.send(letter())


async def test_starttls_asked_of_a_server_that_does_not_offer_it(
    mail_server: ServerFactory, connect: Callable[..., SmtpProvider]
) -> None:
    server = mail_server()
    with pytest.raises(TlsFailed, match="does not offer STARTTLS"):
        await connect(server, security="starttls").send(letter())


async def test_a_wrong_password_is_refused_credentials(
    mail_server: ServerFactory, connect: Callable[..., SmtpProvider]
) -> None:
    server = mail_server(authenticator=authenticator, auth_require_tls=False)
    provider = connect(server, username=USER, password="wrong")
    with pytest.raises(
        CredentialsRefused, match=r"refused the user name and password \(535"
    ) as raised:
        await provider.send(letter())
    assert "wrong" not in str(raised.value)
    assert server.mailbox.received == []


# --- refusals and failures ------------------------------------------------------------------------


async def test_a_recipient_refused_for_good_fails_that_message_and_the_next_one_goes(
    mail_server: ServerFactory, connect: Callable[..., SmtpProvider]
) -> None:
    server = mail_server()
    server.mailbox.rcpt_replies["gone@example.com"] = "550 5.1.1 <gone@example.com>: No such user"
    provider = connect(server)
    await provider.send(letter(to="first@example.com"))

    with pytest.raises(MessageRefused, match="No such user") as refused:
        await provider.send(letter(to="gone@example.com"))
    assert refused.value.code == "550"

    await provider.send(letter(to="next@example.com"))
    first, following = server.mailbox.received
    assert following.rcpt_tos == ["next@example.com"]
    assert following.peer == first.peer  # the same connection, reset after the refusal


async def test_a_temporary_refusal_says_to_try_later_and_is_not_a_failed_message(
    mail_server: ServerFactory, connect: Callable[..., SmtpProvider]
) -> None:
    server = mail_server()
    server.mailbox.rcpt_replies["new@example.com"] = "451 4.7.1 Greylisted, try again in 5 min"
    with pytest.raises(TryLater, match=r"Greylisted.*try again later") as raised:
        await connect(server).send(letter(to="new@example.com"))
    assert not isinstance(raised.value, MessageRefused)
    assert raised.value.status == 451


async def test_a_message_the_server_rejects_after_reading_it_is_refused(
    mail_server: ServerFactory, connect: Callable[..., SmtpProvider]
) -> None:
    server = mail_server()
    server.mailbox.data_reply = "554 5.7.1 Message rejected as spam"
    with pytest.raises(MessageRefused, match="rejected as spam"):
        await connect(server).send(letter())


async def test_a_server_that_is_not_running_is_unreachable(
    connect: Callable[..., SmtpProvider],
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    provider = connect(port=port)
    with pytest.raises(ProviderUnreachable, match="could not be reached"):
        await provider.send(letter())
    result = await provider.check_health()
    assert not result.ok
    assert result.error_class == "connect"


async def test_no_answer_after_the_message_was_handed_over_is_unknown_and_not_sent_again(
    mail_server: ServerFactory, connect: Callable[..., SmtpProvider]
) -> None:
    server = mail_server()
    server.mailbox.data_delay = 3.0
    provider = connect(server, timeout=1)
    with pytest.raises(OutcomeUnknown, match="may have accepted it"):
        await provider.send(letter())
    await asyncio.sleep(0.3)
    assert server.mailbox.data_started == 1  # it reached the server, and only once


async def test_a_paused_connection_sends_nothing(
    mail_server: ServerFactory, connect: Callable[..., SmtpProvider]
) -> None:
    server = mail_server()
    provider = connect(server)
    provider.client.paused = True
    with pytest.raises(ProviderPaused):
        await provider.send(letter())
    assert server.mailbox.received == []


async def test_sms_is_not_carried_by_a_mail_server(connect: Callable[..., SmtpProvider]) -> None:
    sms = OutgoingMessage(key="k", channel=Channel.SMS, to="+263771234567", text="Hi")
    with pytest.raises(MessageRefused, match="carries e-mail"):
        await connect(port=1).send(sms)


async def test_a_mail_server_cannot_tell_which_messages_it_took(
    connect: Callable[..., SmtpProvider],
) -> None:
    from datetime import UTC, datetime

    with pytest.raises(CannotTell):
        await connect(port=1).find(letter(), datetime.now(UTC))


# --- the kept connection --------------------------------------------------------------------------


async def test_messages_in_a_row_share_one_connection(
    mail_server: ServerFactory, connect: Callable[..., SmtpProvider]
) -> None:
    server = mail_server()
    provider = connect(server)
    for _ in range(3):
        await provider.send(letter())
    assert len({got.peer for got in server.mailbox.received}) == 1


async def test_sends_at_the_same_time_never_interleave_on_the_connection(
    mail_server: ServerFactory, connect: Callable[..., SmtpProvider]
) -> None:
    server = mail_server()
    provider = connect(server)
    messages = [letter(to=f"parent{n}@example.com") for n in range(8)]
    await asyncio.gather(*(provider.send(message) for message in messages))
    assert sorted(got.rcpt_tos[0] for got in server.mailbox.received) == sorted(
        message.to for message in messages
    )
    assert len({got.peer for got in server.mailbox.received}) == 1


async def test_a_connection_the_server_dropped_while_idle_is_opened_again(
    mail_server: ServerFactory, connect: Callable[..., SmtpProvider]
) -> None:
    server = mail_server(timeout=0.3)  # aiosmtpd closes connections idle this long
    provider = connect(server)
    await provider.send(letter())
    await asyncio.sleep(0.8)
    await provider.send(letter())
    first, second = server.mailbox.received
    assert first.peer != second.peer


async def test_a_server_that_says_it_is_closing_the_connection_gets_a_new_one(
    mail_server: ServerFactory, connect: Callable[..., SmtpProvider]
) -> None:
    server = mail_server()
    provider = connect(server)
    await provider.send(letter())
    server.mailbox.mail_replies.append("421 4.4.2 Idle too long, closing connection")
    await provider.send(letter(to="second@example.com"))
    first, second = server.mailbox.received
    assert second.rcpt_tos == ["second@example.com"]
    assert first.peer != second.peer


# --- health and the connection service ----------------------------------------------------------


async def test_the_health_check_greets_signs_in_and_says_goodbye(
    mail_server: ServerFactory, connect: Callable[..., SmtpProvider]
) -> None:
    server = mail_server(authenticator=authenticator, auth_require_tls=False)
    good = await connect(server, username=USER, password=PASSWORD).check_health()
    assert good.ok, good.detail
    assert f"signed in as {USER}" in good.detail
    bad = await connect(server, username=USER, password="nope").check_health()
    assert not bad.ok
    assert bad.error_class == "auth"
    assert server.mailbox.received == []


async def test_connected_through_the_connection_service_with_the_password_in_the_keyring(
    services: Services,
    mail_server: ServerFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(KINDS, SMTP.key, SMTP)
    server = mail_server(authenticator=authenticator, auth_require_tls=False)
    record = await services.connections.add(
        "smtp",
        "School mail",
        {
            "host": "127.0.0.1",
            "port": str(server.port),
            "security": "none",
            "username": USER,
            "from_address": FROM,
        },
        {"password": PASSWORD},
    )
    assert "password" not in record.config
    result = await services.connections.test(record.id)
    assert result.ok, result.detail
    provider = await services.connections.provider(record.id)
    assert isinstance(provider, SmtpProvider)
    try:
        await provider.send(letter())
    finally:
        await provider.aclose()
    assert len(server.mailbox.received) == 1


@pytest.mark.parametrize(
    ("values", "field_name"),
    [
        ({"host": "https://smtp.example.com"}, "host"),
        ({"from_address": "not an address"}, "from_address"),
        ({"security": "ssl"}, "security"),
        ({"port": "70000"}, "port"),
    ],
)
def test_settings_that_cannot_work_are_refused_with_the_field_named(
    values: dict[str, str], field_name: str
) -> None:
    base = {"host": "smtp.example.com", "from_address": FROM}
    _config, _secrets, errors = SMTP.check({**base, **values}, {})
    assert [error.field for error in errors] == [field_name]


def test_message_ids_are_valid_whatever_the_key() -> None:
    assert message_id("msg 1/ä..x.", "a@Example.COM") == "<msg-1/-.x@example.com>"
    long_id = message_id("k" * 400, "a@example.com")
    assert len(long_id) <= 255
    assert long_id.endswith("@example.com>")
