"""Owns the checks every request passes before any view runs, and the headers every response gets.

1. The raw request target may not carry an encoded slash, backslash, dot or NUL (`%2f %5c %2e %00`)
   nor a `..`/`.` segment or a backslash after decoding: no view ever sees a path that could climb
   out of the root (the views check again, component by component, and resolve symlinks).
2. Without a token the viewer only answers requests whose Host is a loopback name, so a web page
   cannot reach it through DNS rebinding.
3. With a token, every request carries it: `Authorization: Bearer T`, `?token=T` (a GET is then
   redirected to the same URL without it, setting an HttpOnly SameSite=Strict cookie), or that
   cookie. Anything else gets 401.
4. A state-changing request (POST, DELETE, ...) coming from another site (its Origin or
   Sec-Fetch-Site says so) gets 403.
"""

from __future__ import annotations

import hmac
import re
from urllib.parse import urlencode, urlsplit

from flask import Flask, Response, jsonify, redirect, request

from gridgen.viewer.state import get_state

COOKIE = "gridgen_token"
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}
_BAD_ENCODED = re.compile(r"%(2f|5c|2e|00)", re.IGNORECASE)
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'self'")


def install(app: Flask) -> None:
    app.before_request(_guard)
    app.after_request(_headers)


def deny(status: int, message: str) -> Response:
    """An error as JSON for API and event-stream clients, as plain text for everything else."""
    if request.path.startswith(("/api/", "/live/")) or request.accept_mimetypes.best == "application/json":
        response = jsonify(error=message)
    else:
        response = Response(message + "\n", mimetype="text/plain")
    response.status_code = status
    return response


def _raw_path() -> str:
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or request.path
    raw = raw.split("?", 1)[0].split("#", 1)[0]
    return raw if raw.startswith("/") else urlsplit(raw).path  # absolute-form: http://host/path


def _unsafe_target() -> str | None:
    raw = _raw_path()
    if _BAD_ENCODED.search(raw):
        return "encoded slashes, backslashes, dots and NULs are not allowed in URLs"
    if "//" in raw:
        return "empty path segments (as in an absolute path after a prefix) are not allowed in URLs"
    for path in (raw, request.path):
        if "\\" in path or "\x00" in path:
            return "backslashes are not allowed in URLs"
        segments = path.split("/")
        if any(segment in (".", "..") for segment in segments):
            return "'.' and '..' are not allowed in URLs"
    return None


def host_name(host: str) -> str:
    """`host[:port]` or `[v6]:port` without the port, lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _supplied_token() -> tuple[str | None, bool]:
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip(), False
    if "token" in request.args:
        return request.args.get("token", ""), True
    return request.cookies.get(COOKIE), False


def _same_token(supplied: str | None, token: str) -> bool:
    return supplied is not None and hmac.compare_digest(supplied.encode("utf-8"), token.encode("utf-8"))


def _cross_site() -> bool:
    if request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
        return True
    origin = request.headers.get("Origin")
    if origin is None:
        return False
    return origin.rstrip("/").lower() != request.host_url.rstrip("/").lower()


def _guard() -> Response | None:
    state = get_state()
    problem = _unsafe_target()
    if problem:
        return deny(400, problem)
    if state.token is None and host_name(request.host) not in LOOPBACK_HOSTS:
        return deny(403, "this viewer has no token, so it only answers requests addressed to localhost; "
                         "restart it with --token to reach it under another name")
    if state.token is not None:
        supplied, from_query = _supplied_token()
        if not _same_token(supplied, state.token):
            return deny(401, "missing or wrong token: open the URL `gridgen serve` printed (it ends in ?token=...) "
                             "or send the header `Authorization: Bearer TOKEN`")
        if from_query and request.method == "GET":
            rest = [(k, v) for k, values in request.args.lists() if k != "token" for v in values]
            response = redirect(request.path + ("?" + urlencode(rest) if rest else ""), code=303)
            response.set_cookie(COOKIE, state.token, httponly=True, samesite="Strict", path="/")
            return response
    if request.method not in _SAFE_METHODS and _cross_site():
        return deny(403, "requests from other sites are refused")
    return None


def _headers(response: Response) -> Response:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("Content-Security-Policy", CSP)
    return response
