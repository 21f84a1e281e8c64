"""Hiding secrets and control characters in text shown to a person or written to a log.

Every URL monitord shows (a store URL in an error, an apprise URL in a delivery log, a portal URL
in a config message) goes through `mask_url`; free text that may hold URLs (an exception's
message) through `mask_urls`. Catalogue text, which a service provider writes, goes through
`printable` before it reaches a log line or a terminal, so it cannot forge a line or move the
cursor.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any
from urllib.parse import unquote_plus

MASK = "***"
SECRET_PARAMS = re.compile(
    r"(token|secret|passw|pwd|key|sign|auth|credential|session|access)", re.IGNORECASE
)
"""Query parameters whose values are masked (access_token=, sign=, api_key=...)."""
# A path segment that looks like a token: 16+ characters of letters, digits, - and _ with at
# least one digit (webhook keys, bot tokens), or a hex string of 32+ characters.
_TOKEN_SEGMENT = re.compile(r"(?=[A-Za-z0-9_-]*\d)[A-Za-z0-9_-]{16,}|[0-9a-fA-F]{32,}")
_PLACEHOLDER = re.compile(r"\{[a-z_]+\}")
_URL_IN_TEXT = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
"""C0 and C1 controls (ESC, CR, backspace...) but tab and newline, line and paragraph separators,
and the bidirectional overrides that make text read differently from what it is."""


_URL_PARTS = re.compile(
    r"(?P<head>[^:/?#]+://)(?P<rest>.*)",
    re.DOTALL,
)
"""A URL as written, so that what is shown is the URL itself, only its secrets replaced
(urlsplit and a rebuild turned https://H/?x into https://h/?x=)."""
_AT_HOST = re.compile(r"@(?:\[[^\]/?#@]*\]|[^/?#@:\[\]]*)(?::[^/?#@]*)?(?=[/?#]|$)")
"""A @ followed by a host (and a port) that ends where a path, query or fragment begins."""
_IN_QUERY_VALUE = re.compile(r"[?#&][^?#&=]*=[^?#&=]*$")
"""Text ending inside a query's name=value: a @ there (mailto's ?to=ops@example.gov.cn) is the
value's, not the one before the host."""


def _authority_end(rest: str) -> int:
    """Where the user:password@host:port of rest (a URL after its ://) ends.

    A password written as is may hold any character: base64's /, a @, #, ? or :. So the
    authority runs to the host after the last @ that a host follows, not to the first / ? or #
    (urlsplit's reading, which showed the rest of such a password as the URL's path).
    """
    hosts = list(_AT_HOST.finditer(rest))
    before_hosts = [m for m in hosts if not _IN_QUERY_VALUE.search(rest, 0, m.start())]
    chosen = before_hosts or hosts
    if chosen:
        return chosen[-1].end()
    return len(re.split("[/?#]", rest, maxsplit=1)[0])


def _mask_query(query: str) -> str:
    """query (or a fragment) with the values of secret-looking names, and token-like values
    or bare words, masked; every other character as written."""
    pieces = []
    for piece in query.split("&"):
        name, equals, value = piece.partition("=")
        plain_name, plain_value = unquote_plus(name), unquote_plus(value)
        secret_value = SECRET_PARAMS.search(plain_name) or _TOKEN_SEGMENT.fullmatch(plain_value)
        if equals and plain_value and secret_value:
            piece = f"{name}={MASK}"
        elif not equals and _TOKEN_SEGMENT.fullmatch(plain_name):
            piece = MASK
        pieces.append(piece)
    return "&".join(pieces)


TOKEN_HOST_SCHEMES = frozenset(
    {
        "dingtalk",
        "wecombot",
        "feishu",
        "lark",
        "wxteams",
        "wechat",
        "wxpusher",
        "pushplus",
        "schan",
        "qq",
    }
)
"""apprise's services whose API host is fixed: the host part of their URL is a token (and the
user part, dingtalk://secret@token, a secret), masked whatever it looks like."""


def _mask_netloc(netloc: str, scheme: str = "") -> str:
    """A URL's user:password@host:port with its password, or a token in place of the user or
    the host, masked."""
    if scheme in TOKEN_HOST_SCHEMES and netloc:
        return MASK
    userinfo, at, hostport = netloc.rpartition("@")
    if not at:
        # Apprise puts tokens where a host would be: dingtalk://TOKEN, wecombot://KEY.
        return MASK if _TOKEN_SEGMENT.fullmatch(hostport) else netloc
    user, colon, password = userinfo.partition(":")
    if colon:
        # A placeholder monitord fills at send time ({smtp_password}) holds no secret.
        shown = password if _PLACEHOLDER.fullmatch(password) else MASK
        return f"{user}:{shown}@{hostport}"
    if _TOKEN_SEGMENT.fullmatch(user) or not hostport:
        return f"{MASK}@{hostport}"
    return netloc


@lru_cache(maxsize=8192)
def mask_url(url: str) -> str:
    """url with its password, secret-looking query values and token-like path parts masked.

    Everything else stays as written (the host's case, a query word without a value, the
    fragment; only the scheme is shown in lower case, as monitord reads it), so a person sees
    the URL monitord uses and can still tell which channel or server it is: `dingtalk://***@…`,
    `postgresql://monitord:***@db:5432/monitord`. Text that is not a URL is returned with its
    secret-looking words masked all the same. Cached: the probes show every service's URL each
    round.
    """
    written = _URL_PARTS.fullmatch(url)
    if written is None:
        return _TOKEN_SEGMENT.sub(MASK, url)
    scheme = written["head"][:-3].lower()
    rest = written["rest"]
    netloc_end = _authority_end(rest)
    before_fragment, has_fragment, fragment = rest[netloc_end:].partition("#")
    path, has_query, query = before_fragment.partition("?")
    if not scheme.startswith(("sqlite", "file")):
        # A file's path names folders and a file (pytest-67/test_store0), never a secret.
        path = "/".join(MASK if _TOKEN_SEGMENT.fullmatch(seg) else seg for seg in path.split("/"))
    # The scheme in lower case, as every check of it reads it ("HTTP://" is plain HTTP).
    shown = written["head"].lower() + _mask_netloc(rest[:netloc_end], scheme) + path
    if has_query:
        shown += "?" + _mask_query(query)
    if has_fragment:
        shown += "#" + _mask_query(fragment)
    return shown


def _mask_found_url(found: re.Match[str]) -> str:
    """A URL found in text, masked; a closing parenthesis after it, as in `name (url)`, is the
    text's, not the URL's (taken for a query value, it was masked away)."""
    url = found.group(0)
    tail = ""
    while url.endswith(")") and url.count("(") < url.count(")"):
        url, tail = url[:-1], ")" + tail
    return mask_url(url) + tail


def mask_urls(text: str) -> str:
    """text with every URL in it masked as `mask_url` does."""
    return _URL_IN_TEXT.sub(_mask_found_url, text)


_SECRET_PIECE_SEPARATORS = re.compile(r"[@/:?#]")
MIN_SECRET_PIECE = 4
"""Pieces of a secret shorter than this are left in text: masking every "p" would hide the
message, and three characters give nothing away."""


def mask_secret(text: str, secret: str) -> str:
    """text with secret, and each piece of it between a @ / : ? or #, masked.

    A driver quotes what it was given as it read it: psycopg's "failed to resolve host
    'ssW0rd@db'" holds the tail of the password p@ssW0rd, which no URL in the text shows.
    """
    pieces = {secret, *_SECRET_PIECE_SEPARATORS.split(secret)}
    for piece in sorted(pieces, key=len, reverse=True):
        if len(piece) >= MIN_SECRET_PIECE:
            text = text.replace(piece, MASK)
    return text


def mask_urls_within(value: Any) -> Any:
    """value (JSON-like: a probe's facts) with the URLs in each of its texts masked, at any
    depth: a result stores the URL it probed as given, a person is shown it masked."""
    if isinstance(value, str):
        return mask_urls(value)
    if isinstance(value, dict):
        return {key: mask_urls_within(item) for key, item in value.items()}
    if isinstance(value, list):
        return [mask_urls_within(item) for item in value]
    return value


def printable(text: str) -> str:
    """text without control characters: each becomes a visible escape (\\x1b, \\r, \\u202e).

    Tabs and newlines stay when `text` is a message of monitord's own; for catalogue text that
    lands inside one line of a log, use `one_line`.
    """
    return _CONTROL.sub(lambda m: repr(m.group(0))[1:-1], text)


def escaped(text: str) -> str:
    """text with the control characters `printable` finds written as \\uXXXX instead.

    The same escape reads right in plain text and is valid inside a JSON string: for a
    command's output, which may be either.
    """
    return _CONTROL.sub(lambda m: f"\\u{ord(m.group(0)):04x}", text)


def error_line(exc: BaseException) -> str:
    """The first line of what an exception says, URLs masked: a database error's own message
    ("database or disk is full"), without the SQL and the link SQLAlchemy adds on lines of their
    own."""
    said = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return mask_urls(said[0] if said else "")


def one_line(text: str) -> str:
    """text as one printable line: controls escaped as `printable` does, newlines and tabs too."""
    return printable(text).replace("\n", "\\n").replace("\t", "\\t")
