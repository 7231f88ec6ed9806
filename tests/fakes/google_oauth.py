"""A fake of Google's OAuth 2.0 endpoints for installed (desktop) apps, served over loopback.

What Switchboard relies on, as Google documents it:

- `GET /o/oauth2/v2/auth` (accounts.google.com): the authorization endpoint the app opens in
  the user's browser, with `client_id`, `redirect_uri`, `response_type=code`, `scope`, `state`,
  `code_challenge` and `code_challenge_method` (`S256`, or `plain`), and optionally
  `access_type`, `login_hint`, `prompt`. The redirect URI of an installed app is a loopback one,
  `http://127.0.0.1:PORT[/path]` or `http://[::1]:PORT[/path]` (any port; `localhost` also
  accepted); anything else, an unknown client, a missing parameter or a bad challenge method is
  an error page shown to the user ("Error 400: redirect_uri_mismatch", "invalid_request",
  "invalid_scope"; "Error 401: invalid_client") and no redirect. Consent answers `302` to
  `redirect_uri?code=…&scope=…&state=…`; a refusal (`refuse_next_consent`) to
  `redirect_uri?error=access_denied&state=…`. A test follows the `Location` as the browser would.
- `POST /token` (oauth2.googleapis.com), form-encoded, with `client_id` and `client_secret`
  (401 `invalid_client` otherwise):
  `grant_type=authorization_code` with `code`, `redirect_uri` (equal to the one authorized, or
  400 `redirect_uri_mismatch`) and `code_verifier` (checked against the challenge:
  BASE64URL(SHA256(verifier)) for S256); a code works once and for ten minutes (400
  `invalid_grant` "Bad Request" afterwards). The answer is `access_token`, `expires_in` (3599),
  `refresh_token` ("always returned for installed applications"), `scope`, `token_type: Bearer`.
  `grant_type=refresh_token` with `refresh_token`: a new access token with the same fields but
  no `refresh_token`; a revoked one is 400 `invalid_grant` "Token has been expired or revoked.".
  Errors are `{"error": …, "error_description": …}`.
- At most 100 refresh tokens per account and client: making the 101st silently invalidates the
  oldest.
- `POST /revoke` with `token` (an access or a refresh token, in the form or the query): 200;
  revoking either ends the whole grant (the refresh token and every access token made from it);
  an unknown or already revoked token is 400 `invalid_token`.
- `GET /tokeninfo?access_token=…`: `aud`, `azp`, `scope`, `expires_in`, `exp`; 400
  `invalid_token` for a token that is not live.

What the fake leaves out: the ID token (`openid` scope), incremental authorization
(`include_granted_scopes`), time-based access (`refresh_token_expires_in`), the device flow.

For tests: `issue_tokens` skips the browser (as if the user had consented), `expire_access_tokens`
ages every access token past its hour, `revoke_refresh_tokens` plays the user removing the app's
access in their Google Account, `refuse_next_consent` plays the user clicking "Cancel", and
`accepts(token)` / `scopes_of(token)` are what the Calendar fake asks of a bearer token.

Relied on: "OAuth 2.0 for iOS & Desktop Apps"
(https://developers.google.com/identity/protocols/oauth2/native-app: loopback IP address
redirect, PKCE parameters, the token exchange and its answer, refreshing, revoking, error
pages), "Using OAuth 2.0 to Access Google APIs"
(https://developers.google.com/identity/protocols/oauth2: refresh token limit and expiration),
RFC 7636 (PKCE S256) and RFC 8252 section 7.3 (any loopback port).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

CALENDAR_SCOPE = "https://www.googleapis.com/auth/calendar"
CALENDAR_EVENTS_SCOPE = "https://www.googleapis.com/auth/calendar.events"
ACCESS_LIFETIME = 3599  # what Google answers: an hour, less a second
CODE_LIFETIME = 600.0  # authorization codes are short-lived; ten minutes here
REFRESH_TOKEN_LIMIT = 100  # per Google Account per OAuth client
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
_PLAIN_SCOPES = frozenset({"openid", "email", "profile"})


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]


@dataclass
class Grant:
    """One consent of the user: its refresh token, and whether it still stands."""

    refresh_token: str
    scope: str
    made: int  # order of making, for the refresh token limit
    revoked: bool = False


@dataclass
class AccessToken:
    token: str
    grant: Grant
    expires_at: float  # time.monotonic()


@dataclass
class AuthorizationCode:
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    challenge: str
    method: str
    expires_at: float
    used: bool = False


@dataclass
class FakeGoogleOAuth:
    client_id: str = "1071234567890-fakeswitchboard.apps.googleusercontent.com"
    client_secret: str = "GOCSPX-FakeSwitchboardSecret"
    access_lifetime: int = ACCESS_LIFETIME
    refresh_token_limit: int = REFRESH_TOKEN_LIMIT
    seen: list[Seen] = field(default_factory=list)
    _codes: dict[str, AuthorizationCode] = field(default_factory=dict)
    _grants: dict[str, Grant] = field(default_factory=dict)  # refresh token -> grant
    _access: dict[str, AccessToken] = field(default_factory=dict)
    _refusals: int = 0
    _made: int = 0
    _lock: threading.RLock = field(default_factory=threading.RLock)

    # --- what tests use -------------------------------------------------------------------------

    @property
    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/o/oauth2/v2/auth", self._authorize, methods=["GET"]),
                Route("/token", self._token, methods=["POST"]),
                Route("/revoke", self._revoke, methods=["POST"]),
                Route("/tokeninfo", self._tokeninfo, methods=["GET", "POST"]),
            ]
        )

    def issue_tokens(self, scope: str = CALENDAR_SCOPE) -> dict[str, Any]:
        """The token answer of a consent the user gave, without the browser dance."""
        with self._lock:
            grant = self._new_grant(scope)
            return self._token_answer(grant, with_refresh_token=True)

    def accepts(self, token: str) -> bool:
        """Whether `token` is an access token this fake issued, unexpired and not revoked."""
        with self._lock:
            return self._live(token) is not None

    def scopes_of(self, token: str) -> frozenset[str]:
        """The scopes a live access token carries (none for a token that is not live)."""
        with self._lock:
            live = self._live(token)
            return frozenset(live.grant.scope.split()) if live else frozenset()

    def expire_access_tokens(self) -> None:
        """Every access token issued so far is past its expiry (refresh tokens still work)."""
        with self._lock:
            for access in self._access.values():
                access.expires_at = 0.0

    def revoke_refresh_tokens(self) -> None:
        """The user removes the app's access in their Google Account: every grant ends, its
        refresh token and the access tokens made from it."""
        with self._lock:
            for grant in self._grants.values():
                grant.revoked = True

    def refuse_next_consent(self, times: int = 1) -> None:
        """The user clicks "Cancel" on the consent screen the next `times` times."""
        with self._lock:
            self._refusals += times

    @property
    def live_refresh_tokens(self) -> list[str]:
        with self._lock:
            return [token for token, grant in self._grants.items() if not grant.revoked]

    def count(self, path: str) -> int:
        return sum(seen.path == path for seen in self.seen)

    # --- the endpoints --------------------------------------------------------------------------

    async def _authorize(self, request: Request) -> Response:
        query = dict(request.query_params)
        self.seen.append(Seen("GET", request.url.path, query, {}))
        if query.get("client_id") != self.client_id:
            return _error_page(401, "invalid_client", "The OAuth client was not found.")
        redirect_uri = query.get("redirect_uri", "")
        if not redirect_uri:
            return _error_page(400, "invalid_request", "Missing required parameter: redirect_uri")
        if not _is_loopback(redirect_uri):
            return _error_page(
                400,
                "redirect_uri_mismatch",
                "You can't sign in to this app because it doesn't comply with Google's OAuth 2.0 "
                f"policy. redirect_uri={redirect_uri}",
            )
        for name in ("response_type", "scope"):
            if not query.get(name):
                return _error_page(400, "invalid_request", f"Missing required parameter: {name}")
        if query["response_type"] != "code":
            return _error_page(
                400, "unsupported_response_type", f"Invalid response_type: {query['response_type']}"
            )
        scope = " ".join(query["scope"].split())
        unknown = [s for s in scope.split() if not _known_scope(s)]
        if unknown:
            return _error_page(
                400, "invalid_scope", f"Some requested scopes were invalid: {unknown}"
            )
        challenge = query.get("code_challenge", "")
        method = query.get("code_challenge_method", "plain" if challenge else "")
        if method and method not in ("S256", "plain"):
            return _error_page(
                400, "invalid_request", f"Invalid code_challenge_method value: {method}"
            )
        if method and not challenge:
            return _error_page(400, "invalid_request", "Missing code_challenge.")
        state = {"state": query["state"]} if "state" in query else {}
        with self._lock:
            if self._refusals:
                self._refusals -= 1
                return _redirect(redirect_uri, {"error": "access_denied", **state})
            code = "4/0A" + secrets.token_urlsafe(48)
            self._codes[code] = AuthorizationCode(
                code=code,
                client_id=self.client_id,
                redirect_uri=redirect_uri,
                scope=scope,
                challenge=challenge,
                method=method,
                expires_at=time.monotonic() + CODE_LIFETIME,
            )
        return _redirect(redirect_uri, {**state, "code": code, "scope": scope})

    async def _token(self, request: Request) -> Response:
        form = await _form(request)
        self.seen.append(Seen("POST", request.url.path, dict(request.query_params), form))
        if form.get("client_id") != self.client_id:
            return _oauth_error(401, "invalid_client", "The OAuth client was not found.")
        if form.get("client_secret") != self.client_secret:
            return _oauth_error(401, "invalid_client", "Unauthorized")
        grant_type = form.get("grant_type", "")
        if grant_type == "authorization_code":
            return self._exchange(form)
        if grant_type == "refresh_token":
            return self._refresh(form)
        return _oauth_error(400, "unsupported_grant_type", f"Invalid grant_type: {grant_type}")

    def _exchange(self, form: dict[str, str]) -> Response:
        for name in ("code", "redirect_uri"):
            if not form.get(name):
                return _oauth_error(400, "invalid_request", f"Missing required parameter: {name}")
        with self._lock:
            code = self._codes.get(form["code"])
            if code is None:
                return _oauth_error(400, "invalid_grant", "Malformed auth code.")
            if code.used or code.expires_at < time.monotonic():
                return _oauth_error(400, "invalid_grant", "Bad Request")
            if form["redirect_uri"] != code.redirect_uri:
                return _oauth_error(400, "redirect_uri_mismatch", "Bad Request")
            if code.challenge:
                verifier = form.get("code_verifier", "")
                if not verifier:
                    return _oauth_error(400, "invalid_grant", "Missing code verifier.")
                if _challenge_of(verifier, code.method) != code.challenge:
                    return _oauth_error(400, "invalid_grant", "Invalid code verifier.")
            code.used = True
            grant = self._new_grant(code.scope)
            return JSONResponse(self._token_answer(grant, with_refresh_token=True))

    def _refresh(self, form: dict[str, str]) -> Response:
        if not form.get("refresh_token"):
            return _oauth_error(400, "invalid_request", "Missing required parameter: refresh_token")
        with self._lock:
            grant = self._grants.get(form["refresh_token"])
            if grant is None or grant.revoked:
                return _oauth_error(400, "invalid_grant", "Token has been expired or revoked.")
            return JSONResponse(self._token_answer(grant, with_refresh_token=False))

    async def _revoke(self, request: Request) -> Response:
        form = await _form(request)
        self.seen.append(Seen("POST", request.url.path, dict(request.query_params), form))
        token = form.get("token") or request.query_params.get("token", "")
        with self._lock:
            grant = self._grants.get(token)
            if grant is None and token in self._access:
                grant = self._access[token].grant
            if grant is None or grant.revoked:
                return _oauth_error(400, "invalid_token", "Token expired or revoked")
            grant.revoked = True
        return Response(status_code=200)

    async def _tokeninfo(self, request: Request) -> Response:
        form = await _form(request)
        self.seen.append(Seen(request.method, request.url.path, dict(request.query_params), form))
        token = form.get("access_token") or request.query_params.get("access_token", "")
        with self._lock:
            live = self._live(token)
            if live is None:
                return _oauth_error(400, "invalid_token", "Invalid Value")
            left = int(live.expires_at - time.monotonic())
            return JSONResponse(
                {
                    "azp": self.client_id,
                    "aud": self.client_id,
                    "scope": live.grant.scope,
                    "exp": str(int(time.time()) + left),
                    "expires_in": str(left),
                    "access_type": "offline",
                }
            )

    # --- tokens ---------------------------------------------------------------------------------

    def _new_grant(self, scope: str) -> Grant:
        self._made += 1
        grant = Grant("1//0" + secrets.token_urlsafe(64), scope, self._made)
        self._grants[grant.refresh_token] = grant
        live = sorted((g for g in self._grants.values() if not g.revoked), key=lambda g: g.made)
        for oldest in live[: max(0, len(live) - self.refresh_token_limit)]:
            oldest.revoked = True  # "without warning"
        return grant

    def _token_answer(self, grant: Grant, *, with_refresh_token: bool) -> dict[str, Any]:
        token = "ya29." + secrets.token_urlsafe(96)
        self._access[token] = AccessToken(token, grant, time.monotonic() + self.access_lifetime)
        answer: dict[str, Any] = {
            "access_token": token,
            "expires_in": self.access_lifetime,
            "scope": grant.scope,
            "token_type": "Bearer",
        }
        if with_refresh_token:
            answer["refresh_token"] = grant.refresh_token
        return answer

    def _live(self, token: str) -> AccessToken | None:
        access = self._access.get(token)
        if access is None or access.grant.revoked or access.expires_at <= time.monotonic():
            return None
        return access


def _challenge_of(verifier: str, method: str) -> str:
    if method == "plain":
        return verifier
    digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _is_loopback(uri: str) -> bool:
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return False
    return (
        parts.scheme == "http"
        and parts.hostname in _LOOPBACK_HOSTS
        and port is not None
        and not parts.fragment
    )


def _known_scope(scope: str) -> bool:
    return scope in _PLAIN_SCOPES or scope.startswith("https://www.googleapis.com/auth/")


async def _form(request: Request) -> dict[str, str]:
    """The form-encoded body (without Starlette's multipart dependency); last value wins."""
    body = (await request.body()).decode("utf-8", "replace")
    return {key: values[-1] for key, values in parse_qs(body, keep_blank_values=True).items()}


def _redirect(redirect_uri: str, params: dict[str, str]) -> Response:
    joiner = "&" if urlsplit(redirect_uri).query else "?"
    return RedirectResponse(redirect_uri + joiner + urlencode(params), status_code=302)


def _error_page(status: int, error: str, detail: str) -> Response:
    """What the browser shows instead of redirecting: Google's error page, as plain text."""
    return PlainTextResponse(
        f"Access blocked: authorization error\n\nError {status}: {error}\n\n{detail}\n",
        status_code=status,
    )


def _oauth_error(status: int, error: str, description: str) -> Response:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)
