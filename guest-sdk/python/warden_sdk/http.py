"""Outgoing HTTP from a Python tool, through ``wasi:http``.

A tool built for the ``tool-http`` world (``componentize-py -d
guest-sdk/wit -w tool-http componentize ...``) can make requests::

    from warden_sdk import http

    reply = http.request("https://api.example.com/items?q=1")
    reply.status, reply.header("content-type"), reply.json()
    http.request("https://api.example.com/items", method="POST",
                 headers={"content-type": "application/json"}, body=b"{}")

The tool never opens a socket: the host makes each request, after
deciding it against the tool's own ``http`` grant in the policy (URL,
method, sizes, time, private addresses) and recording it in the audit log.
A request the grant does not allow, or one that fails, raises
:class:`HttpError` with the ``wasi:http`` error code (``.code``, e.g.
``HTTP-request-denied``) and what it means; the host's audit record names
the rule. With no grant every request is refused.

Only blocking requests, one at a time; bodies are bytes (a ``str`` body is
sent as UTF-8). Redirects are not followed: a 3xx is a response like any
other, and following it is a new request, decided again.
"""

import json
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple, Union
from urllib.parse import urlsplit

from . import _wit

__all__ = ["HttpError", "Response", "request"]

# The most response-body bytes `request` reads unless told otherwise. The
# grant's `max_response` is the hard bound; this one keeps a tool's own
# memory from filling up when the grant is generous.
DEFAULT_MAX_RESPONSE = 10 << 20

# A read of at most this many bytes at a time.
_READ_CHUNK = 64 << 10
# `blocking-write-and-flush` takes at most 4096 bytes per call (wasi:io).
_WRITE_CHUNK = 4096

# What the error codes a tool meets most often mean under warden.
_MEANINGS = {
    "HTTP-request-denied": "refused by the tool's `http` grant (the audit log names the rule)",
    "destination-IP-prohibited": "refused: the address is private or special, "
    "and the grant's rule does not say `private = true`",
    "HTTP-request-body-size": "the request body is larger than the grant's `max_request`",
    "HTTP-response-body-size": "the response body is larger than the grant's `max_response`",
    "HTTP-request-method-invalid": "the method is not one this request may use",
    "HTTP-request-URI-invalid": "the URL is not one the host will send",
    "connection-timeout": "no connection within the grant's `timeout`",
    "HTTP-response-timeout": "no response within the grant's `timeout`",
    "connection-refused": "the server refused the connection",
    "DNS-error": "the host name did not resolve",
}


class HttpError(Exception):
    """A request that got no response: refused by the policy, or failed.

    ``code`` is the ``wasi:http`` error code (``HTTP-request-denied``, ...).
    """

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code


@dataclass(frozen=True)
class Response:
    """A response: status, headers in order (names lower-cased), the body."""

    status: int
    headers: List[Tuple[str, str]]
    body: bytes

    def header(self, name: str) -> Optional[str]:
        """The first value of the header ``name`` (any case), or ``None``."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key == wanted), None)

    def text(self, encoding: str = "utf-8") -> str:
        """The body decoded as ``encoding``; undecodable bytes become U+FFFD."""
        return self.body.decode(encoding, errors="replace")

    def json(self):
        """The body parsed as JSON."""
        return json.loads(self.body)


def _wasi():
    return (
        _wit.need(_wit.http_types, "`wasi:http` (build the tool for the `tool-http` world)"),
        _wit.need(_wit.outgoing_handler, "`wasi:http/outgoing-handler`"),
        _wit.need(_wit.streams, "`wasi:io/streams`"),
    )


def _code_name(code) -> str:
    """``ErrorCode_HttpRequestDenied`` -> ``HTTP-request-denied`` (the WIT name)."""
    words = []
    for part in type(code).__name__.removeprefix("ErrorCode_"):
        if part.isupper() and words:
            words.append("-")
        words.append(part.lower())
    name = "".join(words)
    for upper in ("http", "dns", "tls", "ip", "uri"):
        name = "-".join(upper.upper() if w == upper else w for w in name.split("-"))
    return name


def _error(code) -> HttpError:
    name = _code_name(code)
    detail = getattr(code, "value", None)
    meaning = _MEANINGS.get(name, "the request failed")
    if isinstance(detail, str) and detail:
        meaning = f"{meaning} ({detail})"
    return HttpError(name, meaning)


def _method(types, name: str):
    fixed = {
        "GET": types.Method_Get,
        "HEAD": types.Method_Head,
        "POST": types.Method_Post,
        "PUT": types.Method_Put,
        "DELETE": types.Method_Delete,
        "CONNECT": types.Method_Connect,
        "OPTIONS": types.Method_Options,
        "TRACE": types.Method_Trace,
        "PATCH": types.Method_Patch,
    }.get(name.upper())
    return fixed() if fixed is not None else types.Method_Other(name)


def _is_err(value) -> bool:
    """Whether ``value`` is a componentize-py ``Err`` (raised or returned)."""
    return _wit.Err is not None and isinstance(value, _wit.Err)


def _unwrap(result):
    """A componentize-py ``Ok``/``Err`` value: the ``Ok`` payload, or raise."""
    if _is_err(result):
        raise _error(result.value)
    return result.value


def request(
    url: str,
    method: str = "GET",
    headers: Optional[Dict[str, str]] = None,
    body: Union[bytes, str, None] = None,
    max_response: int = DEFAULT_MAX_RESPONSE,
) -> Response:
    """Send one request and read the whole response.

    Raises :class:`HttpError` when the request is refused or fails, or the
    body is longer than ``max_response`` bytes (code ``HTTP-response-body-size``).
    """
    types, handler, streams = _wasi()
    parts = urlsplit(url)
    schemes = {"http": types.Scheme_Http, "https": types.Scheme_Https}
    if parts.scheme not in schemes or not parts.netloc:
        raise HttpError("HTTP-request-URI-invalid", f"`{url}` is not an http:// or https:// URL")
    if isinstance(body, str):
        body = body.encode("utf-8")
    try:
        fields = types.Fields.from_list(
            [(name, value.encode("latin-1")) for name, value in (headers or {}).items()]
        )
    except Exception as bad:  # noqa: BLE001 - `Err(header-error)`
        if _is_err(bad):
            kind = type(bad.value).__name__.removeprefix("HeaderError_")
            raise HttpError(
                "header-error",
                f"the headers {sorted(headers or {})} are refused by wasi:http ({kind}): "
                "a header name or value is malformed, or one the host sets itself (host, "
                "content-length, connection, ...)",
            ) from None
        raise
    outgoing = types.OutgoingRequest(fields)
    outgoing.set_method(_method(types, method))
    outgoing.set_scheme(schemes[parts.scheme]())
    outgoing.set_authority(parts.netloc)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    outgoing.set_path_with_query(path)
    outgoing_body = outgoing.body()
    try:
        future = handler.handle(outgoing, None)
    except Exception as refused:  # noqa: BLE001 - `Err(error-code)` from the host
        if _is_err(refused):
            raise _error(refused.value) from None
        raise
    _send_body(types, outgoing_body, body)
    with future:
        future.subscribe().block()
        response = _unwrap(_unwrap(future.get()))
    with response:
        status = response.status()
        with response.headers() as received:
            head = [(k.lower(), v.decode("latin-1")) for k, v in received.entries()]
        data = _read_body(streams, response, max_response)
    return Response(status, head, data)


def _send_body(types, outgoing_body, body: Optional[bytes]) -> None:
    """Write ``body`` and finish the request; a refused request stops reading
    it, and the refusal is what ``handle``'s future reports, so a write that
    fails is left for that."""
    try:
        if body:
            with outgoing_body.write() as stream:
                for start in range(0, len(body), _WRITE_CHUNK):
                    stream.blocking_write_and_flush(body[start : start + _WRITE_CHUNK])
        types.OutgoingBody.finish(outgoing_body, None)
    except Exception as failed:  # noqa: BLE001 - a closed stream after a refusal
        if not _is_err(failed):
            raise


def _read_body(streams, response, limit: int) -> bytes:
    chunks = []
    size = 0
    with response.consume() as incoming:
        with incoming.stream() as stream:
            while True:
                try:
                    chunk = stream.blocking_read(_READ_CHUNK)
                except Exception as ended:  # noqa: BLE001 - `Err(stream-error)`
                    if _is_err(ended):
                        if isinstance(ended.value, streams.StreamError_Closed):
                            break
                        raise HttpError("HTTP-response-incomplete", "the response body broke off") from None
                    raise
                size += len(chunk)
                if size > limit:
                    raise HttpError(
                        "HTTP-response-body-size",
                        f"the response body is longer than {limit} bytes (max_response)",
                    )
                chunks.append(chunk)
    return b"".join(chunks)
