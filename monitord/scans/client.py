"""ZAP's JSON API through its Python client (`zaproxy`): every answer read within its size
and nesting limits, every failure one ZapError with a one-line message."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from zapv2 import ZAPv2

from monitord.errors import (
    ZapAnswerTooLarge,
    ZapApiError,
    ZapAuthRejected,
    ZapBadAnswer,
    ZapBusy,
    ZapError,
    ZapScanForgotten,
    ZapTimeout,
    ZapUnavailable,
    ZapUrlNotFound,
)
from monitord.scans.state import ZapDriverSettings
from monitord.textable import shortened

# Codes for which a later retry cannot help: monitord asked for something that does not exist
# in ZAP's configuration or sent a malformed request.
_PERMANENT_CODES = frozenset(
    {
        "bad_action",
        "bad_view",
        "bad_type",
        "bad_format",
        "no_implementor",
        "missing_parameter",
        "illegal_parameter",
        "url_not_in_context",
        "mode_violation",
        "disabled",
    }
)


def _api_error(
    code: str, endpoint: str, message: str | None, http_status: int | None
) -> ZapApiError:
    """Build the error for ZAP error `code` returned by `endpoint`."""
    said = f"{code}: {message}" if message else code
    text = f"ZAP refused {endpoint} ({said})"
    if code == "url_not_found":
        return ZapUrlNotFound(
            f"{text}; the service URL is not in ZAP's sites tree — it did not answer ZAP",
            code=code,
            http_status=http_status,
        )
    if code == "scan_in_progress":
        return ZapBusy(
            f"{text}; another AJAX spider is running in ZAP", code=code, http_status=http_status
        )
    return ZapApiError(
        text,
        code=code,
        http_status=http_status,
        retryable=code not in _PERMANENT_CODES,
    )


# --------------------------------------------------------------------------------------------
# Settings, state and results
# --------------------------------------------------------------------------------------------


MAX_JSON_DEPTH = 32
"""Deeper than any answer or report of ZAP's (an alert in a page is 3 levels deep, in a
traditional-json report 5) and far from the decoder's recursion limit."""

_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_NOT_BRACKET = bytes(set(range(256)) - set(b"[]{}"))
_CURLY_TO_SQUARE = bytes.maketrans(b"{}", b"[]")


def json_nesting_problem(data: bytes, max_depth: int = MAX_JSON_DEPTH) -> str | None:
    """ "nests more than N levels deep" when decoding `data` as JSON would go deeper than
    `max_depth`; None otherwise (including when it is not JSON at all: the decoder says so).

    Works on the brackets outside strings, removing the innermost pairs one level per pass,
    in C-speed byte operations: a 32 MiB answer is checked in well under a second.
    """
    if data.count(b"[") + data.count(b"{") <= max_depth:
        return None
    brackets = _JSON_STRING.sub(b"", data).translate(_CURLY_TO_SQUARE, _NOT_BRACKET)
    too_deep = b"[" * (max_depth + 1)  # that many opened in a row is that deep already
    for _ in range(max_depth):
        if too_deep in brackets:
            return f"nests more than {max_depth} levels deep"
        shorter = brackets.replace(b"[]", b"")
        if len(shorter) == len(brackets):
            break  # only unpaired brackets are left
        brackets = shorter
    else:
        if brackets:
            return f"nests more than {max_depth} levels deep"
    # Unpaired brackets: the decoder fails on them, but only after descending through the
    # ones left open, one recursion each.
    if brackets.count(b"[") > max_depth:
        return f"nests more than {max_depth} levels deep"
    return None


# --------------------------------------------------------------------------------------------
# The client: zaproxy's ZAPv2 with a socket timeout and ZAP's error answers turned into errors
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Answer:
    """One HTTP answer of ZAP's API, read whole within the size cap."""

    status: int
    content_type: str | None
    body: bytes


_CHUNK = 64 << 10


def read_capped(
    response: requests.Response, endpoint: str, max_bytes: int, deadline: float
) -> bytes:
    """The body of `response`, refused past `max_bytes` or when it is still coming at
    `deadline` (time.monotonic), so that neither a huge nor a trickling answer holds on."""
    limit = f"zap.max_answer_mb ({max_bytes / (1 << 20):g} MiB)"
    declared = response.headers.get("Content-Length", "")
    if re.fullmatch(r"[0-9]+", declared) and (len(declared) > 18 or int(declared) > max_bytes):
        raise ZapAnswerTooLarge(
            f"ZAP's answer to {endpoint} is larger than {limit}; it was not read"
        )
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(_CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise ZapAnswerTooLarge(
                f"ZAP's answer to {endpoint} is larger than {limit}; the rest was not read"
            )
        if time.monotonic() > deadline:
            raise ZapTimeout(f"ZAP's answer to {endpoint} was still arriving when its time was up")
        chunks.append(chunk)
    return b"".join(chunks)


def _decoded(data: bytes, endpoint: str) -> Any:
    """ZAP's JSON answer decoded; ValueError when it is not JSON, ZapBadAnswer when it nests
    deeper than any answer of ZAP's (the decoder would recurse once per level)."""
    problem = json_nesting_problem(data, MAX_JSON_DEPTH)
    if problem is not None:
        raise ZapBadAnswer(f"ZAP's answer to {endpoint} {problem}")
    return json.loads(data)


class _TimeoutZAPv2(ZAPv2):  # type: ignore[misc]  # zapv2 ships no type information
    """`ZAPv2` whose transport has a timeout and a size cap, and raises ZAP's HTTP error answers.

    ZAPv2's generated methods all go through `_request_api`; this override does what the
    original does (zapv2/__init__.py: a fresh `requests.Session`, the key in `X-ZAP-API-Key`,
    the call sent as a proxy request through `proxies`) and adds what it lacks: a timeout, an
    answer read in chunks up to `max_answer_bytes` (the original read it whole, however large),
    and a decoder that refuses deep nesting. An HTTP 4xx/5xx with ZAP's `{"code", "message"}`
    body becomes a `ZapApiError` with ZAP's own message; without this, the client would return
    the code string as if it were the value asked for (which the driver still checks for, see
    `read_count`).
    """

    def __init__(
        self, *, proxies: dict[str, str], apikey: str, timeout_s: float, max_answer_bytes: int
    ) -> None:
        super().__init__(proxies=proxies, apikey=apikey)
        self._monitord_proxies = proxies
        self._monitord_key = apikey
        self._monitord_timeout = timeout_s
        self._monitord_max_answer = max_answer_bytes

    def _request_api(
        self, url: str, query: Any = None, method: str = "GET", body: Any = None
    ) -> _Answer:
        if not url.startswith("http://zap/"):
            raise ValueError("A non ZAP API url was specified " + url)
        endpoint = url.removeprefix("http://zap/JSON/").strip("/")
        # As long as the driver waits for the call (`ZapScanner._call`), then it gives up.
        deadline = time.monotonic() + self._monitord_timeout * 1.5 + 1.0
        with requests.Session() as session:
            # No compression asked for: a small answer cannot inflate while it is read.
            session.headers["Accept-Encoding"] = "identity"
            if self._monitord_key:
                session.headers["X-ZAP-API-Key"] = self._monitord_key
            with session.request(
                method,
                url,
                params=query,
                data=body,
                proxies=self._monitord_proxies,
                verify=False,
                timeout=self._monitord_timeout,
                stream=True,
            ) as response:
                answer = _Answer(
                    status=response.status_code,
                    content_type=response.headers.get("Content-Type"),
                    body=read_capped(response, endpoint, self._monitord_max_answer, deadline),
                )
        if answer.status >= 400:
            try:
                payload = _decoded(answer.body, endpoint)
                code, message = str(payload["code"]), str(payload.get("message", ""))
            except (ValueError, KeyError, TypeError):
                raise ZapBadAnswer(
                    f"ZAP answered {endpoint} with HTTP {answer.status} and no error code"
                ) from None
            raise _api_error(code, endpoint, message, answer.status)
        return answer

    def _request(self, url: str, get: Any = None, method: str = "GET", body: Any = None) -> Any:
        # zapv2's generated methods take the first value of the JSON object this returns
        # (`next(iter(d.values()))`): `{}` would raise StopIteration inside a worker thread,
        # which asyncio cannot hand back and so never completes, and a list or a string would
        # raise AttributeError. Every view and action of ZAP answers one non-empty object.
        answer = self._request_api(url, get, method, body)
        endpoint = url.removeprefix("http://zap/JSON/").strip("/")
        where = self._monitord_proxies.get("http", "")
        try:
            value = _decoded(answer.body, endpoint)
        except ValueError:
            kind = answer.content_type or "no content type"
            raise ZapBadAnswer(
                f"the answer to {endpoint} from {where} is not JSON ({kind}, "
                f"{len(answer.body)} bytes): is it ZAP that listens there?"
            ) from None
        if not isinstance(value, dict) or not value:
            shown = shortened(json.dumps(value, ensure_ascii=False), 60)
            raise ZapBadAnswer(
                f"ZAP answered {endpoint} with {shown} where an object with a value was expected"
            )
        return value

    def _request_other(
        self, url: str, get: Any = None, method: str = "GET", body: Any = None
    ) -> str:
        # The OTHER endpoints (reports) answer text; monitord uses none, but they go through
        # the same capped transport.
        return self._request_api(url, get, method, body).body.decode("utf-8", "replace")


ClientFactory = Callable[[ZapDriverSettings], Any]


def default_client(settings: ZapDriverSettings) -> Any:
    """Build the zaproxy client for `settings`, as the driver uses it."""
    proxies = {"http": settings.zap.url, "https": settings.zap.url}
    return _TimeoutZAPv2(
        proxies=proxies,
        apikey=settings.api_key,
        timeout_s=settings.zap.call_timeout_seconds,
        max_answer_bytes=settings.zap.max_answer_mb << 20,
    )


def _causes(exc: BaseException) -> list[BaseException]:
    """`exc` and everything behind it: causes, contexts, urllib3's `.reason`, wrapped args."""
    found: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if any(current is seen for seen in found):
            continue
        found.append(current)
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        linked.extend(getattr(current, "args", ()))
        todo.extend(e for e in linked if isinstance(e, BaseException))
    return found


def transport_error(exc: BaseException, endpoint: str, settings: ZapDriverSettings) -> ZapError:
    """Turn what `requests` raised into the `ZapError` it means."""
    where = settings.zap.url
    causes = _causes(exc)
    # Refused first: urllib3's NewConnectionError is, for history's sake, a timeout class.
    if any(isinstance(c, ConnectionRefusedError) for c in causes):
        return ZapUnavailable(f"ZAP is not reachable at {where} (connection refused)")
    if any(isinstance(c, requests.Timeout | TimeoutError) for c in causes):
        limit = settings.zap.call_timeout_seconds
        return ZapTimeout(f"ZAP at {where} did not answer {endpoint} within {limit:g} s")
    if any(isinstance(c, ConnectionResetError) for c in causes):
        # http.client.RemoteDisconnected is a ConnectionResetError: ZAP's API answers a bad
        # or missing key by closing the connection (API.java: BAD_API_KEY "Fail silently").
        return ZapAuthRejected(
            f"ZAP at {where} closed the connection without answering {endpoint}: the API key "
            "is probably wrong (or this address is not permitted in ZAP's API options)"
        )
    text = " ".join(str(c) for c in causes)
    if "Name or service not known" in text or "NameResolutionError" in text:
        return ZapUnavailable(f"ZAP's address {where} cannot be resolved")
    # Before OSError: requests' JSONDecodeError is a ValueError and, as every
    # RequestException, an OSError too; it means an answer that is not JSON, not no answer.
    if isinstance(exc, ValueError):
        return ZapBadAnswer(f"the answer to {endpoint} from {where} is not JSON")
    if isinstance(exc, requests.ConnectionError | OSError):
        return ZapUnavailable(f"ZAP is not reachable at {where} ({type(exc).__name__})")
    return ZapError(f"calling ZAP {endpoint} failed: {type(exc).__name__}")


def no_stop_iteration(fn: Callable[[], Any], endpoint: str) -> Any:
    """Run `fn`, turning the StopIteration of an empty JSON object into `ZapBadAnswer`.

    A StopIteration cannot be set on an asyncio future: the call would never complete. The
    default client checks answers itself; this covers any other client factory.
    """
    try:
        return fn()
    except StopIteration:
        raise ZapBadAnswer(f"ZAP answered {endpoint} with an empty object") from None


def read_count(value: Any, endpoint: str, *, forgotten: bool = False) -> int:
    """Check that ZAP gave a number as a string, as it does for ids and percentages.

    With `validate_status_code` off, zaproxy hands back the first value of any JSON answer —
    for an error that is the code (`"does_not_exist"`), so a string of letters here is ZAP
    refusing the call.
    """
    # ASCII digits only, and few of them: str.isdigit() also takes "²", which int() refuses,
    # and int() refuses a string of over 4,300 digits; both stopped the scan with a traceback.
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,18}", value):
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and re.fullmatch(r"[a-z_]+", value):
        raise coded_error(value, endpoint, forgotten=forgotten)
    shown = shortened(repr(value), 40)
    raise ZapBadAnswer(f"ZAP answered {endpoint} with {shown} where a number was expected")


def require_ok(value: Any, endpoint: str) -> None:
    """Check an action's answer: ZAP says "OK" (`{"Result": "OK"}`)."""
    if value == "OK":
        return
    if isinstance(value, str) and re.fullmatch(r"[a-z_]+", value):
        raise coded_error(value, endpoint)
    raise ZapBadAnswer(f"ZAP answered {endpoint} with {value!r} where OK was expected")


def coded_error(code: str, endpoint: str, *, forgotten: bool = False) -> ZapApiError:
    if forgotten and code == "does_not_exist":
        return ZapScanForgotten(
            f"ZAP no longer knows the scan asked for by {endpoint} (does_not_exist): "
            "ZAP was probably restarted",
            code=code,
        )
    return _api_error(code, endpoint, None, None)


# --------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------


class CallTimedOut(Exception):
    """Internal: the overall deadline passed or the active scan is stuck."""

    def __init__(self, reason: ZapError) -> None:
        super().__init__(str(reason))
        self.reason = reason
