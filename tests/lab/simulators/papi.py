"""PowerScale PAPI simulator: stands in for the OneFS Platform API of a Dell PowerScale
(Isilon) cluster, served by Apache httpd over HTTPS on 8080 (OneFS 9.5 by default).

Bytes followed (OneFS API Reference, "Platform API overview" and "Session service"):

- ``GET /platform/latest`` without credentials: ``401`` with the PAPI JSON error shape
  ``{"errors":[{"code":"AEC_UNAUTHORIZED","message":"authorization required"}]}`` and
  ``WWW-Authenticate: Basic realm="papi"``; with HTTP Basic credentials of the configured
  user, or the session cookie, ``200 {"latest":"16"}`` (OneFS 9.5 reports 16).
- ``POST /session/1/session`` with ``{"username":..,"password":..,"services":[..]}``:
  ``201`` with ``{"services":[..],"timeout_absolute":14400,"timeout_inactive":900,
  "username":..}`` and the ``isisessid`` (HttpOnly) and ``isicsrf`` cookies; wrong
  credentials ``401`` with the error shape above. ``GET /session/1/session`` shows the
  session for a valid cookie, 401 otherwise; ``DELETE`` ends it (204).
- Other ``/platform/...`` paths: 401 without credentials, ``404`` with
  ``AEC_NOT_FOUND`` with them. Everything else: Apache's 404 page.
- ``Server: Apache`` on every answer, as the cluster's httpd sends.

The password is compared in constant time and never echoed, logged or kept in
attributes other than the one given.

    async with PapiServer(ssl_context=ctx, user="admin", password=pw) as srv: ...
    PAPI_PASSWORD=... python -m tests.lab.simulators papi --bind ADDR --port 8080 \
        --cert C --key K --user admin [--password-env PAPI_PASSWORD] [--latest 16]
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import secrets
import ssl
from http.cookies import CookieError, SimpleCookie
from typing import Any

from . import HttpRequest, HttpResponse, HttpSimulator

JSON_TYPE = ("Content-Type", "application/json")
SESSION_COOKIE = "isisessid"
CSRF_COOKIE = "isicsrf"

_APACHE_404 = (
    b'<!DOCTYPE HTML PUBLIC "-//IETF//DTD HTML 2.0//EN">\n<html><head>\n'
    b"<title>404 Not Found</title>\n</head><body>\n<h1>Not Found</h1>\n"
    b"<p>The requested URL was not found on this server.</p>\n</body></html>\n"
)


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"errors": [{"code": code, "message": message}]}).encode()


class PapiServer(HttpSimulator):
    """OneFS Platform API (use ``ssl_context`` for HTTPS, as on a real cluster)."""

    name = "papi"
    server_header = "Apache"
    max_body = 64 * 1024

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ssl_context: ssl.SSLContext | None = None,
        user: str = "admin",
        password: str | None = None,
        latest: str = "16",
        **kwargs: Any,
    ) -> None:
        super().__init__(host, port, ssl_context=ssl_context, **kwargs)
        self.user = user
        self._password = password if password is not None else secrets.token_urlsafe(16)
        self.latest = latest
        self._sessions: dict[str, dict[str, Any]] = {}

    def _credentials_ok(self, user: str, password: str) -> bool:
        user_ok = hmac.compare_digest(user.encode(), self.user.encode())
        password_ok = hmac.compare_digest(password.encode(), self._password.encode())
        return user_ok and password_ok

    def _basic_ok(self, request: HttpRequest) -> bool:
        header = request.header("authorization") or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, sep, password = decoded.partition(":")
        return bool(sep) and self._credentials_ok(user, password)

    def _session(self, request: HttpRequest) -> dict[str, Any] | None:
        cookie = SimpleCookie()
        for raw in request.headers.get("cookie", []):
            try:
                cookie.load(raw)
            except CookieError:
                continue
        morsel = cookie.get(SESSION_COOKIE)
        return self._sessions.get(morsel.value) if morsel else None

    def unauthorized(self, message: str = "authorization required") -> HttpResponse:
        return HttpResponse(
            401,
            error_body("AEC_UNAUTHORIZED", message),
            [JSON_TYPE, ("WWW-Authenticate", 'Basic realm="papi"')],
        )

    def respond(self, request: HttpRequest) -> HttpResponse:
        path = request.path.rstrip("/") or "/"
        if path == "/session/1/session":
            return self._session_endpoint(request)
        if path == "/platform" or path.startswith("/platform/"):
            if not (self._basic_ok(request) or self._session(request) is not None):
                return self.unauthorized()
            if path == "/platform/latest" and request.method in ("GET", "HEAD"):
                return HttpResponse(200, json.dumps({"latest": self.latest}).encode(), [JSON_TYPE])
            return HttpResponse(
                404,
                error_body("AEC_NOT_FOUND", f"Path not found: {path[:200]}"),
                [JSON_TYPE],
            )
        return HttpResponse(404, _APACHE_404, [("Content-Type", "text/html; charset=iso-8859-1")])

    def _session_endpoint(self, request: HttpRequest) -> HttpResponse:
        if request.method == "POST":
            try:
                data = json.loads(request.body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                return HttpResponse(
                    400,
                    error_body("AEC_BAD_REQUEST", "Invalid JSON in request body"),
                    [JSON_TYPE],
                )
            if not isinstance(data, dict):
                return HttpResponse(
                    400,
                    error_body("AEC_BAD_REQUEST", "Request body must be an object"),
                    [JSON_TYPE],
                )
            user, password = data.get("username"), data.get("password")
            if not isinstance(user, str) or not isinstance(password, str):
                return HttpResponse(
                    400,
                    error_body("AEC_BAD_REQUEST", "Field: username and password are required"),
                    [JSON_TYPE],
                )
            if not self._credentials_ok(user, password):
                return self.unauthorized("Username or password is incorrect.")
            services = data.get("services")
            if not isinstance(services, list) or not all(isinstance(s, str) for s in services):
                services = ["platform"]
            info = {
                "services": services[:8],
                "timeout_absolute": 14400,
                "timeout_inactive": 900,
                "username": self.user,
            }
            token, csrf = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
            if len(self._sessions) >= 1024:  # bounded, oldest session goes first
                self._sessions.pop(next(iter(self._sessions)))
            self._sessions[token] = info
            headers = [
                JSON_TYPE,
                ("Set-Cookie", f"{SESSION_COOKIE}={token}; path=/; HttpOnly; Secure"),
                ("Set-Cookie", f"{CSRF_COOKIE}={csrf}; path=/; Secure"),
            ]
            return HttpResponse(201, json.dumps(info).encode(), headers)
        session = self._session(request)
        if session is None:
            return self.unauthorized()
        if request.method == "DELETE":
            self._sessions = {k: v for k, v in self._sessions.items() if v is not session}
            return HttpResponse(204, b"", [])
        return HttpResponse(200, json.dumps(session).encode(), [JSON_TYPE])
