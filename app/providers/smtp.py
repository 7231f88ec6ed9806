"""E-mail through any mail server (SMTP submission, RFC 6409) with aiosmtplib: the school's own
server, Gmail or Microsoft 365 with an app password, a relay at the internet provider.

SMTP is a conversation over one TCP connection, not HTTP requests, so it cannot go through the
resilient HTTP layer (`ResilientClient.call` speaks httpx). What it takes from that layer is
what is not about HTTP: the connection's pause switch and its circuit breaker (a server that
keeps failing is left alone for a while, and a person can hold it open for maintenance; only
failures of the server itself count: cannot connect, no answer, the connection dropped, "421
service not available"). Its own resilience:

- A timeout (the `timeout` setting) on connecting, on the TLS handshake and on every command.
- One connection kept open between sends, so a batch of a thousand e-mails is one session; a
  lock keeps two sends from interleaving on it. Servers drop idle connections (RFC 5321 4.5.3.2
  lets them after five minutes, many do sooner): a connection found closed, or one that fails or
  answers 421 at `MAIL FROM` (nothing of the message has left yet), is opened again once.
- No retry once `DATA` was sent: a timeout or a dropped connection after that is
  `OutcomeUnknown`, because the server may have accepted the message and a second send could be
  a second e-mail in a parent's inbox. The messaging service marks it for a person to check.
- Answers classified: a recipient refused with 5xx is `MessageRefused` (that message fails,
  the next goes); any 4xx is `TryLater` (a temporary refusal, greylisting); 535 and friends are
  `CredentialsRefused`; a sender address the server will not send for is `SenderRefused`.

Each message is a proper `EmailMessage`: multipart/alternative with a text part and the HTML
when there is HTML (7-bit clean, quoted-printable), a `Message-ID` made from our key and the
from-address's domain (`message_id`; it is the `Sent.provider_id`, and what a bounce quotes),
`Date`, RFC 2047 encoded subjects and names, and `List-Unsubscribe` with
`List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058) when the message has an
unsubscribe address. SMTP keeps no list we can search, so `find` raises `CannotTell`.

Not recorded in the request log: the log is written by `ResilientClient` for the HTTP calls it
makes, and it offers no public way to record a call it did not make.

Relied on: RFC 5321 (SMTP: reply codes, 4xx transient and 5xx permanent), RFC 6409 (message
submission, port 587), RFC 8314 (implicit TLS on port 465), RFC 3207 (STARTTLS), RFC 4954
(AUTH; 535 "authentication credentials invalid", 534, 538, 454), RFC 5322 (Message-ID, Date),
RFC 2047 (encoded words), RFC 2369 and RFC 8058 (List-Unsubscribe, one-click), RFC 6531
(SMTPUTF8), RFC 1870 (SIZE); aiosmtplib's API and exceptions (aiosmtplib.readthedocs.io).
"""

from __future__ import annotations

import asyncio
import email.policy
import hashlib
import logging
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from email.headerregistry import Address, BaseHeader, HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage
from email.policy import Policy
from email.utils import format_datetime
from html.parser import HTMLParser
from typing import Any, TypeVar
from urllib.parse import quote

import aiosmtplib

from app.domain.messages import AddressError, Channel, MessageStatus, email_address
from app.providers.base import HealthResult, Provider
from app.providers.breaker import BreakerOpen, Permit
from app.providers.http import (
    PROVIDER_FAILURES,
    CredentialsRefused,
    OutcomeUnknown,
    ProviderError,
    ProviderPaused,
    ProviderUnavailable,
    ProviderUnreachable,
    ResilientClient,
)
from app.providers.messaging import (
    MESSAGING,
    CannotTell,
    MessageRefused,
    OutgoingMessage,
    Sent,
)
from app.providers.spec import (
    AuthKind,
    Category,
    ConfigField,
    FieldKind,
    Operation,
    ProviderSpec,
    ResiliencePolicy,
    RetryPolicy,
)

log = logging.getLogger("switchboard.messaging")

STARTTLS, TLS, PLAIN = "starttls", "tls", "none"
SECURITY = (STARTTLS, TLS, PLAIN)
DEFAULT_PORT = 587
DEFAULT_TIMEOUT = 30.0
# Never sent: SMTP is not HTTP, and `SmtpProvider.check_health` speaks SMTP instead. The spec
# needs an operation; this one names what the health check does.
SESSION = Operation("smtp-session", "EHLO", "/", idempotent=True)
T = TypeVar("T")


class TryLater(ProviderError):
    """The mail server refused for now (an SMTP 4xx: greylisting, a full queue, too many
    connections); the same message may be sent later."""

    error_class = "smtp_4xx"


class TlsFailed(ProviderError):
    """No secure connection could be made: a certificate that cannot be trusted, or the
    security setting does not match what the server speaks on that port."""

    error_class = "tls"


class SenderRefused(ProviderError):
    """The server will not send from the connection's from-address: every message would fail
    the same way, so the send stops until a person fixes the setting."""

    error_class = "sender_refused"


# --- the message ----------------------------------------------------------------------------------


class _Verbatim(UnstructuredHeader, BaseHeader):
    """A header written on one line as it is. The email package would fold a long URL (which
    has no spaces to fold at) into RFC 2047 encoded words, and no mail client reads those as a
    List-Unsubscribe address."""

    def fold(self, *, policy: Policy) -> str:
        return f"{self.name}: {self}{policy.linesep}"


_HEADERS = HeaderRegistry()
_HEADERS.map_to_type("list-unsubscribe", _Verbatim)
# CRLF line ends and 7-bit bodies (quoted-printable or base64), so no server needs 8BITMIME.
POLICY = email.policy.SMTP.clone(header_factory=_HEADERS, cte_type="7bit")
# For addresses that are not ASCII (RFC 6531), when the server offers SMTPUTF8.
POLICY_UTF8 = POLICY.clone(utf8=True)

# RFC 5322 atext: what the left part of a Message-ID may hold besides dots.
_NOT_ATEXT = re.compile(r"[^A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+")
MESSAGE_ID_MAX = 255  # what the messages table keeps of a provider id


def message_id(key: str, from_address: str) -> str:
    """The Message-ID header of the message with our `key` sent from `from_address`:
    `<key@domain>`, the key made a dot-atom (a key too long for it is replaced by its hash)."""
    domain = from_address.rpartition("@")[2].strip().lower() or "switchboard.invalid"
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        domain = "switchboard.invalid"
    left = re.sub(r"\.{2,}", ".", _NOT_ATEXT.sub("-", key)).strip(".") or "message"
    if len(left) + len(domain) + 3 > MESSAGE_ID_MAX:
        left = hashlib.sha256(key.encode("utf-8")).hexdigest()[:40]
    return f"<{left}@{domain}>"


class _TextOfHtml(HTMLParser):
    """The readable text of an HTML body, for the text part of a message written only in
    HTML: paragraphs and line breaks kept, scripts and styles dropped, links followed by their
    address."""

    BLOCKS = frozenset({"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0
        self._href: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "head"):
            self._skip += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")
        if tag == "a":
            self._href.append(dict(attrs).get("href") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "head"):
            self._skip = max(0, self._skip - 1)
        elif tag in self.BLOCKS:
            self.parts.append("\n")
        if tag == "a" and self._href:
            href = self._href.pop()
            if href.startswith(("http://", "https://", "mailto:")):
                self.parts.append(f" ({href.removeprefix('mailto:')})")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def text_of_html(html: str) -> str:
    parser = _TextOfHtml()
    parser.feed(html)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def _one_line(text: str) -> str:
    """A header value on one line: line breaks in a subject or a name would be a header
    injection (and the email package refuses them)."""
    return " ".join(text.split())


def _mailbox(address: str, name: str = "") -> Address | str:
    """An address header's value. `Address` refuses a local part outside ASCII even where
    SMTPUTF8 allows it, so such an address is written out as text (and sent as UTF-8)."""
    if address.isascii():
        return Address(display_name=name, addr_spec=address)
    if not name:
        return address
    quoted = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{quoted}" <{address}>'


def compose(
    message: OutgoingMessage,
    *,
    from_address: str,
    from_name: str = "",
    reply_to: str = "",
    now: datetime | None = None,
) -> EmailMessage:
    """The e-mail for `message`. ValueError (AddressError) when it cannot be one."""
    to = email_address(message.to)
    sender = email_address(from_address)
    utf8 = not (to.isascii() and sender.isascii() and reply_to.isascii())
    mail = EmailMessage(policy=POLICY_UTF8 if utf8 else POLICY)
    mail["From"] = _mailbox(sender, _one_line(from_name))
    mail["To"] = _mailbox(to)
    if reply_to:
        mail["Reply-To"] = _mailbox(email_address(reply_to))
    mail["Subject"] = _one_line(message.subject)
    mail["Date"] = format_datetime(now or datetime.now(UTC))
    mail["Message-ID"] = message_id(message.key, sender)
    if message.unsubscribe_url:
        # A URL is ASCII on the wire (RFC 3986): anything else is percent-encoded.
        url = quote(message.unsubscribe_url.strip(), safe=":/?#[]@!$&'()*+,;=%~-._")
        mail["List-Unsubscribe"] = f"<{url}>"
        mail["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    text = message.text or (text_of_html(message.html) if message.html else "")
    mail.set_content(text if text.endswith("\n") else text + "\n")
    if message.html:
        mail.add_alternative(message.html, subtype="html")
    return mail


# --- the provider ---------------------------------------------------------------------------------


def _server_words(error: aiosmtplib.SMTPResponseException) -> str:
    return f"{error.code} {' '.join(str(error.message).split())}".strip()


def _ssl_error(error: BaseException) -> ssl.SSLError | None:
    """The TLS failure behind an error, if one is (aiosmtplib wraps a failed handshake on
    connect in SMTPConnectError)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


class SmtpProvider(Provider):
    """One mail server: one kept connection for sending, and a fresh one for each health check.
    `aclose()` says goodbye to the server (QUIT) and closes the HTTP client too."""

    channels = frozenset({Channel.EMAIL})

    def __init__(
        self,
        spec: ProviderSpec,
        client: ResilientClient,
        config: Mapping[str, Any],
        secrets: Mapping[str, str],
    ) -> None:
        super().__init__(spec, client, config, secrets)
        self.host = str(config.get("host", "")).strip()
        self.port = int(config.get("port") or DEFAULT_PORT)
        self.security = str(config.get("security") or STARTTLS)
        self.username = str(config.get("username") or "")
        self.password = secrets.get("password", "")
        self.from_address = str(config.get("from_address", ""))
        self.from_name = str(config.get("from_name") or "")
        self.reply_to = str(config.get("reply_to") or "")
        self.timeout = float(config.get("timeout") or DEFAULT_TIMEOUT)
        self.ca_file = str(config.get("ca_file") or "")
        self._smtp: aiosmtplib.SMTP | None = None
        self._sending = asyncio.Lock()  # one transaction at a time on the kept connection
        self._tls: ssl.SSLContext | None = None

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    # --- MessageChannel ---------------------------------------------------------------------------

    async def send(self, message: OutgoingMessage) -> Sent:
        if message.channel is not Channel.EMAIL:
            raise MessageRefused(f"{self.spec.name} carries e-mail, not {message.channel.label}.")
        try:
            recipient = email_address(message.to)
            sender = email_address(self.from_address)
            mail = compose(
                message,
                from_address=sender,
                from_name=self.from_name,
                reply_to=self.reply_to,
            )
        except AddressError as exc:
            raise MessageRefused(str(exc), code="address") from None
        except ValueError as exc:
            raise MessageRefused(f"The message could not be written as an e-mail: {exc}") from None
        utf8 = mail.policy is POLICY_UTF8
        content = mail.as_bytes()
        async with self._sending:
            reply = await self._guarded(
                lambda: self._transaction(sender, recipient, content, utf8=utf8)
            )
        log.info(
            "e-mail handed over",
            extra={"connection": self.client.connection_id, "server_reply": reply},
        )
        return Sent(provider_id=str(mail["Message-ID"]), status=MessageStatus.SENT)

    async def find(self, message: OutgoingMessage, since: datetime) -> Sent | None:
        raise CannotTell(
            "A mail server keeps no list of the messages it took that Switchboard could ask; "
            "check the school's sent mail or the server's log."
        )

    async def check_health(self) -> HealthResult:
        """Connect, greet (EHLO), secure the connection as configured, sign in if there is a
        user name, and say goodbye (QUIT): everything a send needs short of sending."""
        started = time.monotonic()
        try:
            await self._guarded(self._probe)
        except ProviderError as exc:
            elapsed = (time.monotonic() - started) * 1000
            return HealthResult(False, elapsed, str(exc), exc.error_class)
        elapsed = (time.monotonic() - started) * 1000
        how = {STARTTLS: " with STARTTLS", TLS: " over TLS", PLAIN: " without encryption"}
        signed = f", signed in as {self.username}" if self.username else ""
        return HealthResult(
            True,
            elapsed,
            f"The mail server {self.where} answered{how[self.security]}{signed} in "
            f"{elapsed:.0f} ms.",
        )

    async def aclose(self) -> None:
        """Close the kept connection politely, then the (unused) HTTP client."""
        async with self._sending:
            smtp, self._smtp = self._smtp, None
            if smtp is not None:
                await _quit(smtp)
        await self.client.aclose()

    # --- the pause switch and the breaker ------------------------------------------------------

    async def _guarded(self, work: Callable[[], Awaitable[T]]) -> T:
        """`work` if the connection is not paused and its breaker permits a call; its outcome
        counts on the breaker only when the server itself failed."""
        if self.client.paused:
            raise ProviderPaused(
                f"{self.client.name} is paused; resume it on the dashboard to send e-mail."
            )
        try:
            permit: Permit = self.client.breaker.acquire()
        except BreakerOpen as exc:
            wait = f" It will be tried again in {exc.retry_after:.0f} s." if exc.retry_after else ""
            reason = exc.snapshot.reason or "it has been failing"
            raise ProviderUnavailable(
                f"{self.client.name} is not being called: {reason}.{wait}",
                retry_after=exc.retry_after,
            ) from exc
        started = time.monotonic()
        try:
            result = await work()
        except ProviderError as error:
            seconds = time.monotonic() - started
            server_down = error.error_class in PROVIDER_FAILURES or error.status == 421
            if server_down:
                permit.failure(seconds)
            else:
                permit.ignore()
            raise
        except BaseException:
            permit.ignore()
            raise
        permit.success(time.monotonic() - started)
        return result

    # --- SMTP -------------------------------------------------------------------------------------

    async def _probe(self) -> None:
        smtp = await self._open()
        await _quit(smtp)

    async def _transaction(self, sender: str, recipient: str, content: bytes, *, utf8: bool) -> str:
        """MAIL FROM, RCPT TO, DATA on the kept connection; the server's final reply."""
        encoding = "utf-8" if utf8 else "ascii"
        try:
            smtp = await self._envelope(sender, recipient, len(content), utf8=utf8)
            try:
                await smtp.rcpt(recipient, encoding=encoding)
            except aiosmtplib.SMTPRecipientRefused as exc:
                await self._reset(smtp)
                if 400 <= exc.code < 500:
                    raise self._try_later(exc, f"would not take mail for {recipient} now") from None
                raise MessageRefused(
                    f"The mail server refused {recipient}: {_server_words(exc)}",
                    code=str(exc.code),
                ) from None
            except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError) as exc:
                self._drop()
                raise self._stopped_before_data(exc) from exc
            try:
                response = await smtp.data(content)
            except aiosmtplib.SMTPDataError as exc:
                await self._reset(smtp)
                if 400 <= exc.code < 500:
                    raise self._try_later(exc, "would not take the message now") from None
                raise MessageRefused(
                    f"The mail server refused the message to {recipient}: {_server_words(exc)}",
                    code=str(exc.code),
                ) from None
            except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError) as exc:
                self._drop()
                what = (
                    f"did not answer within {self.timeout:g} s"
                    if isinstance(exc, aiosmtplib.SMTPTimeoutError)
                    else "dropped the connection"
                )
                raise OutcomeUnknown(
                    f"The mail server {what} after the message to {recipient} was handed over; "
                    "it may have accepted it, so it was not sent again. Check the recipient's "
                    "inbox or the server's log before sending it again."
                ) from exc
        except asyncio.CancelledError:
            # Cut off mid-command, the conversation is out of step: start the next one afresh.
            self._drop()
            raise
        return _one_line(str(response.message))

    async def _envelope(
        self, sender: str, recipient: str, size: int, *, utf8: bool
    ) -> aiosmtplib.SMTP:
        """A connection on which MAIL FROM was accepted. A kept connection that turns out
        closed is opened again: nothing of the message has left at this point."""
        while True:
            smtp, fresh = await self._session()
            if utf8 and not smtp.supports_extension("smtputf8"):
                raise MessageRefused(
                    f"{recipient} (or the from-address) is written with characters outside "
                    "ASCII, and the mail server does not accept such addresses (SMTPUTF8).",
                    code="smtputf8",
                )
            options = ["SMTPUTF8"] if utf8 else []
            if smtp.supports_extension("size"):
                options.append(f"SIZE={size}")  # RFC 1870: refused up front if too big
            try:
                await smtp.mail(sender, options=options, encoding="utf-8" if utf8 else "ascii")
            except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError) as exc:
                self._drop()
                if fresh:
                    raise self._stopped_before_data(exc) from exc
                continue  # the server closed the idle connection: open another
            except aiosmtplib.SMTPResponseException as exc:
                if exc.code == 421 and not fresh:  # "closing the connection" (idle, restart)
                    self._drop()
                    continue
                await self._reset(smtp)
                raise self._mail_refused(exc) from None
            return smtp

    async def _session(self) -> tuple[aiosmtplib.SMTP, bool]:
        """The kept connection, and whether it was opened just now."""
        if self._smtp is not None and self._smtp.is_connected:
            return self._smtp, False
        self._drop()
        self._smtp = await self._open()
        return self._smtp, True

    async def _open(self) -> aiosmtplib.SMTP:
        """A connection greeted, secured as configured and signed in; ProviderError if not."""
        tls_context = await self._tls_context() if self.security != PLAIN else None
        smtp = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            timeout=self.timeout,
            use_tls=self.security == TLS,
            start_tls=self.security == STARTTLS,
            tls_context=tls_context,
        )
        try:
            await smtp.connect()
            if smtp.is_ehlo_or_helo_needed:
                await smtp.ehlo()
            if self.username:
                await smtp.login(self.username, self.password)
        except asyncio.CancelledError:
            smtp.close()
            raise
        except Exception as exc:
            smtp.close()
            raise self._connect_failure(exc) from exc
        return smtp

    async def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            # Reading the system's certificates (or the file) is disk work: not on the loop.
            try:
                self._tls = await asyncio.to_thread(
                    ssl.create_default_context, cafile=self.ca_file or None
                )
            except (OSError, ssl.SSLError) as exc:
                raise TlsFailed(
                    f"The certificate authority file {self.ca_file} could not be read ({exc}); "
                    "give the path of a PEM file, or leave the setting empty."
                ) from exc
        return self._tls

    def _drop(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            smtp.close()

    async def _reset(self, smtp: aiosmtplib.SMTP) -> None:
        """RSET after a refusal so the kept connection can carry the next message; a
        connection that cannot is dropped."""
        if not smtp.is_connected:
            self._drop()
            return
        try:
            await smtp.rset()
        except (aiosmtplib.SMTPException, OSError):
            self._drop()

    # --- what went wrong, in a sentence -----------------------------------------------------------

    def _connect_failure(self, exc: Exception) -> ProviderError:
        name = f"The mail server {self.where}"
        problem = _ssl_error(exc)
        if isinstance(problem, ssl.SSLCertVerificationError):
            return TlsFailed(
                f"{name}'s certificate cannot be trusted ({problem.verify_message}). If the "
                "school runs its own mail server with its own certificate, give its certificate "
                "authority file in the connection's settings."
            )
        if problem is not None:
            other = {STARTTLS: "TLS (usually port 465)", TLS: "STARTTLS (usually port 587)"}
            return TlsFailed(
                f"No secure connection could be made to {self.where} "
                f"({problem.reason or problem}). Check the security setting: this port may "
                f"expect {other.get(self.security, 'another security setting')}."
            )
        if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
            if 400 <= exc.code < 500:
                return self._try_later(exc, "could not check the password now")
            return CredentialsRefused(
                f"{name} refused the user name and password ({_server_words(exc)}). Check them "
                "in the connection's settings; Gmail and Microsoft 365 need an app password.",
                status=exc.code,
            )
        if isinstance(exc, aiosmtplib.SMTPConnectTimeoutError):
            return ProviderUnreachable(
                f"{name} did not answer within {self.timeout:g} s; check the server name and "
                "port, and that the internet connection works."
            )
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            if 400 <= exc.code < 500:
                return self._try_later(exc, "is not taking connections now")
            return ProviderUnreachable(
                f"{name} refused the connection: {_server_words(exc)}", status=exc.code
            )
        if isinstance(exc, aiosmtplib.SMTPConnectError):
            return ProviderUnreachable(
                f"{name} could not be reached ({exc.message}); check the server name and port, "
                "and that the internet connection works."
            )
        if isinstance(exc, aiosmtplib.SMTPTimeoutError):
            return ProviderUnreachable(
                f"{name} stopped answering within {self.timeout:g} s while the connection was "
                "being set up."
            )
        if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
            return ProviderUnreachable(
                f"{name} closed the connection while it was being set up ({exc.message})."
            )
        message = str(getattr(exc, "message", exc))
        if "starttls" in message.lower():
            return TlsFailed(
                f"{name} does not offer STARTTLS on this port. Choose TLS (usually port 465), or "
                "“none” only for a server on the school's own network."
            )
        if "auth" in message.lower():
            return CredentialsRefused(
                f"{name} offers no way to sign in on this connection ({message}). Use STARTTLS or "
                "TLS (many servers offer sign-in only over them), or leave the user name empty."
            )
        return ProviderError(f"{name} could not be used: {message}")

    def _mail_refused(self, exc: aiosmtplib.SMTPResponseException) -> ProviderError:
        if exc.code in (530, 535, 538):
            return CredentialsRefused(
                f"The mail server {self.where} wants a sign-in before it sends mail "
                f"({_server_words(exc)}); give a user name and password in the settings.",
                status=exc.code,
            )
        if 400 <= exc.code < 500:
            return self._try_later(exc, "would not start a message now")
        return SenderRefused(
            f"The mail server {self.where} will not send from {self.from_address} "
            f"({_server_words(exc)}); use an address the account may send from.",
            status=exc.code,
        )

    def _try_later(self, exc: aiosmtplib.SMTPResponseException, what: str) -> TryLater:
        return TryLater(
            f"The mail server {self.where} {what} ({_server_words(exc)}); try again later.",
            status=exc.code,
        )

    def _stopped_before_data(self, exc: Exception) -> ProviderError:
        # Not ProviderTimeout: that says the request may have been acted on, and nothing of
        # the message has left yet.
        if isinstance(exc, aiosmtplib.SMTPTimeoutError):
            return ProviderUnreachable(
                f"The mail server {self.where} did not answer within {self.timeout:g} s, before "
                "the message was handed over; it was not sent, and can be sent again."
            )
        return ProviderUnreachable(
            f"The mail server {self.where} closed the connection before the message was handed "
            "over; it was not sent, and can be sent again."
        )


async def _quit(smtp: aiosmtplib.SMTP) -> None:
    try:
        if smtp.is_connected:
            await smtp.quit()
    except (aiosmtplib.SMTPException, OSError):
        pass
    finally:
        smtp.close()


# --- the spec -------------------------------------------------------------------------------------


def _host(text: str) -> None:
    if "://" in text or "/" in text:
        raise ValueError("Write only the server's name, like smtp.gmail.com, without https://.")
    if not re.fullmatch(r"[A-Za-z0-9.-]+|\[?[0-9A-Fa-f:.]+\]?", text):
        raise ValueError(f"{text!r} is not a server name; write it like mail.school.example.")


def _address(text: str) -> None:
    try:
        email_address(text)
    except AddressError as exc:
        raise ValueError(str(exc)) from None


def _smtp(
    spec: ProviderSpec,
    client: ResilientClient,
    config: Mapping[str, Any],
    secrets: Mapping[str, str],
) -> Provider:
    return SmtpProvider(spec, client, config, secrets)


SMTP = ProviderSpec(
    key="smtp",
    name="E-mail (SMTP)",
    category=Category.MESSAGING,
    description=(
        "E-mail through any mail server: the school's own, Gmail or Microsoft 365 (with an app "
        "password), or the internet provider's."
    ),
    fields=(
        ConfigField(
            "host",
            "Mail server",
            help="The outgoing (SMTP) server's name, like smtp.gmail.com.",
            check=_host,
        ),
        ConfigField(
            "port",
            "Port",
            FieldKind.NUMBER,
            default=DEFAULT_PORT,
            minimum=1,
            maximum=65535,
            help="587 for STARTTLS (most servers), 465 for TLS, 25 on the school's own network.",
        ),
        ConfigField(
            "security",
            "Security",
            FieldKind.SELECT,
            default=STARTTLS,
            choices=SECURITY,
            help=(
                "starttls: the connection is secured after it opens (port 587); tls: secured "
                "from the start (port 465); none: only for a server on the school's own network."
            ),
        ),
        ConfigField(
            "username",
            "User name",
            required=False,
            help="Usually the whole e-mail address. Leave empty if the server needs no sign-in.",
        ),
        ConfigField("password", "Password", FieldKind.SECRET, required=False),
        ConfigField(
            "from_address",
            "From address",
            help="The address families see the e-mail come from; the account must be allowed "
            "to send from it.",
            check=_address,
        ),
        ConfigField(
            "from_name", "From name", required=False, help="Like “Riverside Music School”."
        ),
        ConfigField(
            "reply_to",
            "Reply-to address",
            required=False,
            help="Where replies go, if not to the from address.",
            check=_address,
        ),
        ConfigField(
            "timeout",
            "Timeout (seconds)",
            FieldKind.NUMBER,
            default=DEFAULT_TIMEOUT,
            minimum=1,
            maximum=300,
            help="How long to wait for the server at each step.",
        ),
        ConfigField(
            "ca_file",
            "Certificate authority file (advanced)",
            required=False,
            help="For a server with the school's own certificate: the PEM file of the authority "
            "that issued it. Leave empty for public mail servers.",
        ),
    ),
    auth=AuthKind.BASIC,
    capabilities=frozenset({MESSAGING}),
    health=SESSION,
    # Not called over HTTP (see the module docstring); names the server where an address shows.
    base_url=lambda config: f"smtp://{config.get('host', '')}:{int(config.get('port') or 587)}",
    factory=_smtp,
    policy=ResiliencePolicy(timeout=DEFAULT_TIMEOUT, retry=RetryPolicy(attempts=1)),
    health_interval=300.0,
)
