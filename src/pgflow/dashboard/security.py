"""CSRF protection (a double-submit cookie plus an Origin/Referer check) and security headers.

The CSRF token is a random value kept in a ``SameSite=Strict`` cookie; every form carries a copy in
a hidden field, and a POST is accepted only when both are present and equal (``hmac.compare_digest``).
A page from another site can neither read the cookie nor set the field, and a browser does not even
send a ``Strict`` cookie with a cross-site POST. When the browser names the page a request came from
(``Origin``, else ``Referer``), it must be this host.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Mapping
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CSRF_COOKIE",
    "CSRF_FIELD",
    "SecurityHeaders",
    "csrf_token",
    "remember_csrf_token",
    "request_refusal",
]

CSRF_COOKIE = "pgflow_csrf"
CSRF_FIELD = "csrf_token"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{32,128}$")

# No inline script or style anywhere: every script and stylesheet is a static file of the package.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


def csrf_token(request: Request) -> str:
    """The token of this browser (from its cookie), or a new one that the response will set."""
    existing = request.cookies.get(CSRF_COOKIE, "")
    if _TOKEN.match(existing):
        return existing
    fresh: str | None = getattr(request.state, "new_csrf_token", None)
    if fresh is None:
        fresh = secrets.token_urlsafe(32)
        request.state.new_csrf_token = fresh
    return fresh


def remember_csrf_token(request: Request, response: Response) -> None:
    """Set the cookie when this request minted the token."""
    fresh = getattr(request.state, "new_csrf_token", None)
    if fresh is not None:
        response.set_cookie(
            CSRF_COOKIE, fresh, path=request.scope.get("root_path") or "/", httponly=True,
            samesite="strict", secure=request.url.scheme == "https",
        )  # fmt: skip


def request_refusal(request: Request, form: Mapping[str, str]) -> str | None:
    """Why this POST must be refused (None when it passes the origin and CSRF checks)."""
    if not _same_origin(request):
        return "This form was sent from another site."
    cookie = request.cookies.get(CSRF_COOKIE, "")
    field = form.get(CSRF_FIELD, "")
    if not cookie or not field or not hmac.compare_digest(cookie.encode(), field.encode()):
        return "The form's security token is missing or expired: reload the page and try again."
    return None


def _same_origin(request: Request) -> bool:
    """Origin (else Referer), when the browser sends one, names this host: the ``Host`` the request
    came with, or the ``X-Forwarded-Host`` a reverse proxy set (a cross-site form cannot set it)."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source:
        return True  # not told: the CSRF token decides
    forwarded = request.headers.get("x-forwarded-host", "").split(",")[0].strip()
    hosts = {request.headers.get("host", ""), forwarded} - {""}
    return source != "null" and urlsplit(source).netloc in hosts


class SecurityHeaders:
    """ASGI middleware adding the security headers to every response (pages, fragments, static
    files and errors alike) and ``Cache-Control: no-store`` to everything but static files."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                extra = dict(HEADERS)
                if b"cache-control" not in present:
                    extra["cache-control"] = "no-store"
                headers += [(k.encode(), v.encode()) for k, v in extra.items() if k.encode() not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
