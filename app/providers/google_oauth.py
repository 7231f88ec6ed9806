"""Signing in with Google from a desktop app: OAuth 2.0 for installed apps, with a loopback
redirect and PKCE, and the token endpoint's three calls (exchange a code, refresh, revoke).

The flow, as Google documents it for desktop apps:

1. Make a PKCE pair (`pkce_pair`) and a random `state`.
2. Listen on `http://127.0.0.1:<a port the system picks>/` (`LoopbackRedirect`); Google allows
   any port on a loopback address for a "Desktop app" OAuth client, so nothing is registered.
3. Open the system browser at `authorization_url(...)` (S256 challenge, `access_type=offline`
   so a refresh token comes back, `prompt=consent` so it comes back on every sign-in).
4. The user signs in and allows; Google answers the browser with a 302 to the loopback address
   with `code` and `state` (or `error=access_denied`). `LoopbackRedirect.wait` takes that one
   request, checks `state` (another page cannot slip in a code of its own), and shows the
   browser a small page saying it can be closed.
5. `exchange_code` swaps the code and the PKCE verifier for an access token (an hour) and a
   refresh token (until the user removes the access, or six months unused), which is the one
   thing kept: in the credential store, as the connection's `refresh_token` secret.

`sign_in` does all five. Nothing here blocks an event loop or touches Qt: the loopback server is
an asyncio server, and every call to Google goes through the connection's `ResilientClient`
(the token endpoint is on another host than the API, so operations carry its full address).

Relied on: Google Identity, "OAuth 2.0 for iOS & Desktop Apps"
(https://developers.google.com/identity/protocols/oauth2/native-app: loopback IP address
redirect, `code_challenge`/`code_challenge_method=S256`, `access_type`, `prompt`, `state`,
`error=access_denied` on the redirect, the token exchange and its answer, refreshing, revoking
at https://oauth2.googleapis.com/revoke); "Using OAuth 2.0 to Access Google APIs"
(https://developers.google.com/identity/protocols/oauth2: refresh token expiration, the limit
on live refresh tokens per client and account, granular consent letting a user leave a scope
unticked); RFC 7636 (PKCE: verifier of 43-128 unreserved characters, S256 challenge); RFC 8252
sections 7.3 and 8.10 (loopback redirect on any port, 127.0.0.1 rather than "localhost");
RFC 6749 sections 5.2 and 10.12 (error codes; state against CSRF).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import html
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, Final
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from app.logs import REDACTOR
from app.providers.http import CredentialsRefused, ProviderError, ResilientClient
from app.providers.spec import Operation

log = logging.getLogger("switchboard.providers.google")

AUTH_URL: Final = "https://accounts.google.com/o/oauth2/v2/auth"
TOKEN_URL: Final = "https://oauth2.googleapis.com/token"  # noqa: S105 - an address, not a secret
REVOKE_URL: Final = "https://oauth2.googleapis.com/revoke"
CALENDAR_EVENTS_SCOPE: Final = "https://www.googleapis.com/auth/calendar.events"

SIGN_IN_SECONDS: Final = 300.0  # how long the browser has to come back
REQUEST_SECONDS: Final = 10.0  # how long one connection to the loopback server may take
MAX_REQUEST_LINES: Final = 100  # header lines of one request to the loopback server

# Getting a new access token changes nothing at Google: safe to repeat. A code works once, so
# sending it again after a lost answer cannot help (Google answers invalid_grant); revoking
# twice is harmless. Each carries the endpoint's full address as its path, per call.
REFRESH = Operation("google-token-refresh", "POST", TOKEN_URL, idempotent=True)
EXCHANGE = Operation("google-token-exchange", "POST", TOKEN_URL, idempotent=False)
REVOKE = Operation("google-token-revoke", "POST", REVOKE_URL, idempotent=True)


# --- errors --------------------------------------------------------------------------------------


class SignInError(ProviderError):
    """Signing in with Google did not give Switchboard a refresh token."""

    error_class = "sign_in"


class SignInRefused(SignInError):
    """Google, or the person at the browser, said no (access_denied and the like)."""


class SignInTimedOut(SignInError):
    error_class = "timeout"


class SignInCancelled(SignInError):
    error_class = "cancelled"


class SignInRequired(CredentialsRefused):
    """There is no refresh token, or Google no longer accepts it: a person must sign in with
    Google again (the connection's Sign in with Google)."""


# --- the pieces of the flow ----------------------------------------------------------------------


@dataclass(frozen=True)
class Tokens:
    """The token endpoint's answer. `refresh_token` is "" when refreshing (Google gives one only
    on the exchange); `scope` is what the user actually allowed, space-separated."""

    access_token: str = field(repr=False)
    expires_in: float
    refresh_token: str = field(default="", repr=False)
    scope: str = ""
    token_type: str = "Bearer"  # noqa: S105 - a token kind, not a secret

    def allows(self, scope: str) -> bool:
        return scope in self.scope.split()


@dataclass(frozen=True)
class Authorization:
    """What the browser brought back to the loopback address."""

    code: str = field(repr=False)
    scope: str = ""


def pkce_pair() -> tuple[str, str]:
    """A PKCE code verifier (86 characters of base64url, within RFC 7636's 43-128) and its S256
    challenge: BASE64URL(SHA256(verifier)) without padding."""
    verifier = secrets.token_urlsafe(64)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def new_state() -> str:
    """An unguessable `state` for one sign-in."""
    return secrets.token_urlsafe(32)


def authorization_url(
    auth_url: str,
    client_id: str,
    redirect_uri: str,
    scope: str,
    state: str,
    challenge: str,
    *,
    login_hint: str = "",
) -> str:
    """The address to open in the browser: Google's consent page for `scope`, coming back to
    `redirect_uri` with a code only the holder of the PKCE verifier can use, and a refresh
    token with it (offline access, consent asked every time)."""
    params = {
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "response_type": "code",
        "scope": scope,
        "state": state,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        # A refresh token is what lets the engine sync while nobody is at the desk; Google
        # gives one on the first consent only, unless consent is asked again.
        "access_type": "offline",
        "prompt": "consent",
    }
    if login_hint:
        params["login_hint"] = login_hint
    joiner = "&" if urlsplit(auth_url).query else "?"
    return f"{auth_url}{joiner}{urlencode(params)}"


class LoopbackRedirect:
    """An asyncio server on 127.0.0.1 (a port the system picks) that waits for the one browser
    request bringing Google's answer to a sign-in, answers it with a small page saying the
    window can be closed, and hands the code to `wait`.

    A request with another `state` is refused (and ends the wait: it is not the sign-in that
    was started); requests without an answer (a favicon, a bare visit) get a 404 and the wait
    goes on. `wait` gives up after `timeout` seconds; `cancel` ends it from elsewhere (a
    Cancel button); cancelling the task that awaits it works too. Use it as an async context
    manager, or call `start` and `close`.
    """

    def __init__(
        self,
        state: str,
        *,
        timeout: float = SIGN_IN_SECONDS,
        path: str = "/",
        host: str = "127.0.0.1",
    ) -> None:
        if not state:
            raise ValueError("a sign-in needs a state to check the answer against")
        if not path.startswith("/"):
            raise ValueError("the loopback path must start with /")
        self._state = state
        self._timeout = timeout
        self._path = path
        self._host = host
        self._server: asyncio.Server | None = None
        self._answer: asyncio.Future[Authorization] | None = None
        self._port = 0

    async def __aenter__(self) -> LoopbackRedirect:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> str:
        """Listen, and return the redirect URI to give Google."""
        if self._server is not None:
            return self.redirect_uri
        self._answer = asyncio.get_running_loop().create_future()
        self._server = await asyncio.start_server(self._serve, self._host, 0)
        self._port = int(self._server.sockets[0].getsockname()[1])
        return self.redirect_uri

    @property
    def redirect_uri(self) -> str:
        if self._server is None:
            raise RuntimeError("the loopback redirect is not listening yet; call start()")
        return f"http://{self._host}:{self._port}{self._path}"

    async def wait(self) -> Authorization:
        """The code Google sent back through the browser; SignInRefused when the user (or
        Google) said no or the answer was not for this sign-in, SignInTimedOut after the
        timeout, SignInCancelled after `cancel`."""
        if self._answer is None:
            raise RuntimeError("the loopback redirect is not listening yet; call start()")
        try:
            return await asyncio.wait_for(asyncio.shield(self._answer), self._timeout)
        except TimeoutError:
            minutes = self._timeout / 60
            raise SignInTimedOut(
                f"No answer came back from Google's sign-in page within {minutes:g} min; "
                "start signing in with Google again."
            ) from None

    def cancel(self) -> None:
        """End the wait: `wait` raises SignInCancelled."""
        self._settle(error=SignInCancelled("Signing in with Google was cancelled."))

    async def close(self) -> None:
        """Stop listening. A wait still going on ends as cancelled."""
        self.cancel()
        if self._answer is not None and self._answer.done() and not self._answer.cancelled():
            self._answer.exception()  # retrieved: no "exception was never retrieved" warning
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    # --- the one request ------------------------------------------------------------------------

    def _settle(
        self, *, result: Authorization | None = None, error: BaseException | None = None
    ) -> None:
        if self._answer is None or self._answer.done():
            return
        if error is not None:
            self._answer.set_exception(error)
        elif result is not None:
            self._answer.set_result(result)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_SECONDS):
                target = await _request_target(reader)
                if target is None:
                    await _respond(writer, 405, "Switchboard only takes the browser's return here.")
                    return
                await self._answer_browser(writer, target)
        except (TimeoutError, ConnectionError, ValueError, asyncio.IncompleteReadError):
            pass  # a connection that sent nothing usable: the browser will try again, or not
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer_browser(self, writer: asyncio.StreamWriter, target: str) -> None:
        parts = urlsplit(target)
        query = {name: values[0] for name, values in parse_qs(parts.query).items() if values}
        if parts.path != self._path or not ("code" in query or "error" in query):
            await _respond(writer, 404, "This address only waits for Google's sign-in.")
            return
        if self._answer is None or self._answer.done():
            await _respond(writer, 409, "This sign-in is already over. You can close this window.")
            return
        if not secrets.compare_digest(query.get("state", ""), self._state):
            await _respond(
                writer,
                400,
                "This answer is not for the sign-in Switchboard started, so it was refused. "
                "Close this window and sign in again from Switchboard.",
            )
            self._settle(
                error=SignInRefused(
                    "The answer from the browser was not for the sign-in Switchboard started "
                    "(its state did not match), so it was refused; start signing in with "
                    "Google again."
                )
            )
            return
        if "error" in query:
            error = query["error"]
            await _respond(
                writer,
                200,
                "Switchboard was not allowed to use your Google calendar. You can close this "
                "window and return to Switchboard.",
            )
            self._settle(error=_refusal(error, query.get("error_description", "")))
            return
        await _respond(
            writer, 200, "Switchboard is signed in to Google. You can close this window."
        )
        self._settle(result=Authorization(query["code"], query.get("scope", "")))


async def _request_target(reader: asyncio.StreamReader) -> str | None:
    """The target of one GET (its path and query), after reading its headers; None for any
    other method."""
    line = (await reader.readline()).decode("latin-1").strip()
    if not line:
        raise ConnectionError("the connection closed without a request")
    for _ in range(MAX_REQUEST_LINES):
        header = await reader.readline()
        if header in (b"\r\n", b"\n", b""):
            break
    else:
        raise ValueError("too many header lines")
    method, _, rest = line.partition(" ")
    target = rest.rpartition(" ")[0] or rest
    return target if method == "GET" else None


async def _respond(writer: asyncio.StreamWriter, status: int, sentence: str) -> None:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}.get(
        status, "Conflict"
    )
    page = (
        '<!doctype html><html><head><meta charset="utf-8"><title>Switchboard</title></head>'
        f"<body><p>{html.escape(sentence)}</p></body></html>"
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Content-Type: text/html; charset=utf-8\r\n"
        f"Content-Length: {len(page)}\r\n"
        "Cache-Control: no-store\r\n"
        "Referrer-Policy: no-referrer\r\n"
        "Connection: close\r\n\r\n"
    ).encode("ascii")
    writer.write(head + page)
    await writer.drain()


def _refusal(error: str, description: str) -> SignInRefused:
    if error == "access_denied":
        return SignInRefused(
            "Google refused the sign-in (access_denied): sign in again and allow Switchboard "
            "to manage the calendar."
        )
    if error == "admin_policy_enforced":
        return SignInRefused(
            "Google refused the sign-in (admin_policy_enforced): the school's Google Workspace "
            "administrator does not allow this app; ask them to allow it, then sign in again."
        )
    said = f": {description}" if description else ""
    return SignInRefused(
        f"Google refused the sign-in ({error}){said}. Check the OAuth client in Google Cloud "
        "console (a Desktop app client, with the Google Calendar API enabled), then sign in again."
    )


# --- the token endpoint --------------------------------------------------------------------------


async def exchange_code(
    client: ResilientClient,
    token_url: str,
    client_id: str,
    client_secret: str,
    code: str,
    verifier: str,
    redirect_uri: str,
) -> Tokens:
    """Swap an authorization code and its PKCE verifier for an access and a refresh token."""
    response = await client.call(
        replace(EXCHANGE, path=token_url),
        data={
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "redirect_uri": redirect_uri,
            "client_id": client_id,
            "client_secret": client_secret,
        },
        headers={"Accept": "application/json"},
    )
    if response.status_code >= 400:
        raise _token_error(response, exchanging=True)
    tokens = _tokens(response)
    if not tokens.refresh_token:
        raise SignInError(
            "Google signed in but gave no refresh token, so Switchboard could not keep working "
            "in the background; remove Switchboard's access in the Google Account "
            "(Security, Third-party access), then sign in again."
        )
    return tokens


async def refresh(
    client: ResilientClient,
    token_url: str,
    client_id: str,
    client_secret: str,
    refresh_token: str,
) -> Tokens:
    """A new access token from the refresh token; SignInRequired when Google no longer takes
    it (revoked by the user, six months unused, one of too many)."""
    response = await client.call(
        replace(REFRESH, path=token_url),
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": client_id,
            "client_secret": client_secret,
        },
        headers={"Accept": "application/json"},
    )
    if response.status_code >= 400:
        raise _token_error(response, exchanging=False)
    return _tokens(response)


async def revoke(client: ResilientClient, revoke_url: str, token: str) -> None:
    """End the grant a refresh (or access) token belongs to. A token Google no longer knows
    (already revoked, expired) is no error: the access is gone either way."""
    response = await client.call(replace(REVOKE, path=revoke_url), data={"token": token})
    if response.status_code < 400:
        return
    error, description = _oauth_error(response)
    if response.status_code == 400 and error == "invalid_token":
        return
    raise ProviderError(
        f"Google did not end Switchboard's access ({error or response.status_code})"
        + (f": {description}" if description else "")
        + ". Remove it in the Google Account (Security, Third-party access).",
        status=response.status_code,
    )


async def sign_in(
    client: ResilientClient,
    *,
    client_id: str,
    client_secret: str,
    open_browser: Callable[[str], Awaitable[object]],
    auth_url: str = AUTH_URL,
    token_url: str = TOKEN_URL,
    revoke_url: str = REVOKE_URL,
    scope: str = CALENDAR_EVENTS_SCOPE,
    answer_within: float = SIGN_IN_SECONDS,
    login_hint: str = "",
) -> Tokens:
    """The whole sign-in: listen on loopback, `open_browser(url)` (it should return once the
    browser is asked to open; show the address too, for when no browser opens), wait for the
    answer, exchange the code. A consent that left `scope` unticked is undone and refused."""
    verifier, challenge = pkce_pair()
    state = new_state()
    async with LoopbackRedirect(state, timeout=answer_within) as loopback:
        url = authorization_url(
            auth_url,
            client_id,
            loopback.redirect_uri,
            scope,
            state,
            challenge,
            login_hint=login_hint,
        )
        await open_browser(url)
        answer = await loopback.wait()
        redirect_uri = loopback.redirect_uri
    tokens = await exchange_code(
        client, token_url, client_id, client_secret, answer.code, verifier, redirect_uri
    )
    REDACTOR.add(tokens.refresh_token)
    REDACTOR.add(tokens.access_token)
    if tokens.scope and not tokens.allows(scope):
        # Google's consent screen lets a person untick a permission; without it nothing works.
        with contextlib.suppress(ProviderError):
            await revoke(client, revoke_url, tokens.refresh_token)
        raise SignInRefused(
            "Google signed in without allowing Switchboard to manage the calendar's events: "
            "sign in again and tick that permission."
        )
    log.info("signed in with Google", extra={"scope": tokens.scope})
    return tokens


def _tokens(response: httpx.Response) -> Tokens:
    body = _json(response)
    access = body.get("access_token")
    if not isinstance(access, str) or not access:
        raise ProviderError("Google's token endpoint answered without an access token.")
    try:
        expires_in = float(body.get("expires_in", 3600))
    except (TypeError, ValueError):
        expires_in = 3600.0
    refresh_token = body.get("refresh_token")
    REDACTOR.add(access)
    return Tokens(
        access_token=access,
        expires_in=expires_in,
        refresh_token=refresh_token if isinstance(refresh_token, str) else "",
        scope=str(body.get("scope") or ""),
        token_type=str(body.get("token_type") or "Bearer"),
    )


def _token_error(response: httpx.Response, *, exchanging: bool) -> ProviderError:
    error, description = _oauth_error(response)
    status = response.status_code
    if error in ("invalid_client", "unauthorized_client") or status == 401:
        return CredentialsRefused(
            f"Google did not accept the OAuth client ({error or status}): copy the client ID "
            'and secret again from the "Desktop app" OAuth client in Google Cloud console.',
            status=status,
        )
    if error == "invalid_grant" and not exchanging:
        return SignInRequired(
            "Google no longer accepts Switchboard's sign-in for this calendar (the access was "
            "removed in the Google Account, or not used for six months): sign in with Google "
            "again.",
            status=status,
        )
    if exchanging and error in ("invalid_grant", "redirect_uri_mismatch"):
        return SignInError(
            f"Google did not accept the answer of the sign-in ({error}): it may have been "
            "used already or have expired; sign in with Google again.",
            status=status,
        )
    said = f": {description}" if description else "."
    doing = "the sign-in" if exchanging else "a new access token"
    return ProviderError(f"Google refused {doing} ({error or status}){said}", status=status)


def _oauth_error(response: httpx.Response) -> tuple[str, str]:
    """Google's `{"error": ..., "error_description": ...}`, or ("", "")."""
    body = _json(response)
    error = body.get("error")
    description = body.get("error_description")
    return (
        error if isinstance(error, str) else "",
        description if isinstance(description, str) else "",
    )


def _json(response: httpx.Response) -> Mapping[str, Any]:
    try:
        body = json.loads(response.content or b"{}")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
