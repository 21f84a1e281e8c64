"""Reading the portal's catalogue page by page: the bearer token, ETag, retries with backoff,
and pages read within their size limit."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError
from loguru import logger
from pydantic import SecretStr

from monitord.catalogue.validate import (
    MIB,
    Catalogue,
    ServiceRecord,
    announced_total,
    collect_records,
    show_value,
)
from monitord.config import PortalSettings
from monitord.errors import SyncError
from monitord.redact import mask_url
from monitord.textable import load_json

Sleep = Callable[[float], Awaitable[None]]


class _Retryable(Exception):
    """A page request failed in a way that may pass (timeout, 5xx, cut-off body, HTML)."""


READ_CHUNK = 64 * 1024


async def _bounded_body(response: aiohttp.ClientResponse, max_mb: float, where: str) -> bytes:
    """The body of a page, read in pieces and never more than max_mb MiB of it (decompressed).

    Raises SyncError as soon as the page proves larger (by its Content-Length, or by what came):
    an endless or hostile answer costs no more memory than the limit, and no retry, since the
    same page would come again.
    """
    limit = int(max_mb * MIB)
    too_large = SyncError(
        f"{where} is larger than {max_mb:g} MiB (portal.max_page_mb) and was read no further; "
        "lower portal.page_size, or raise portal.max_page_mb if the portal's records are that big"
    )
    if response.content_length is not None and response.content_length > limit:
        raise too_large
    body = bytearray()
    async for chunk in response.content.iter_chunked(READ_CHUNK):
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


def _client_error(exc: aiohttp.ClientError, where: str) -> str:
    """Why a page could not be read, as a person can act on it."""
    cause = exc.__cause__
    if isinstance(cause, HttpProcessingError) and "content-encoding" in cause.message.lower():
        # A body that is not in the encoding its Content-Encoding names, or in one monitord
        # cannot decode (br, zstd): the connection itself was fine.
        return (
            f"{where}: the page cannot be decoded from the Content-Encoding the portal names "
            f"({cause.message}); the portal should send it plain, or as gzip or deflate"
        )
    if isinstance(exc, aiohttp.ClientPayloadError):
        return f"{where}: the connection closed before the whole page was read"
    return f"{where}: cannot reach the portal ({exc.__class__.__name__})"


async def _get_page(
    session: aiohttp.ClientSession,
    settings: PortalSettings,
    headers: dict[str, str],
    page: int,
) -> tuple[int, dict[str, Any] | None, str | None]:
    url = f"{settings.url}/api/v1/services"
    params = {"page": str(page), "page_size": str(settings.page_size)}
    timeout = aiohttp.ClientTimeout(total=settings.timeout_seconds)
    where = f"page {page}"
    try:
        # No redirect is followed: monitord contacts portal.url alone (README), and a redirect
        # could lead it, with or without the token, into probes.denied_networks.
        async with session.get(
            url, params=params, headers=headers, timeout=timeout, allow_redirects=False
        ) as response:
            if response.status == 304:
                return 304, None, response.headers.get("ETag")
            if 300 <= response.status < 400:
                location = mask_url(response.headers.get("Location", ""))
                raise SyncError(
                    f"{where}: the portal answered HTTP {response.status}, a redirect to "
                    f"{show_value(location)}; monitord follows no redirect: set portal.url to "
                    "the address that serves the catalogue"
                )
            if response.status in (401, 403) and "Authorization" not in headers:
                raise SyncError(
                    f"{where}: the portal asks for a token (HTTP {response.status}) and none is "
                    "set: put it in $MONITORD_PORTAL_TOKEN or in the file portal.token_file names"
                )
            if response.status in (401, 403):
                raise SyncError(f"{where}: the portal refused the token (HTTP {response.status})")
            if response.status == 429 or response.status >= 500:
                raise _Retryable(f"{where}: the portal answered HTTP {response.status}")
            if response.status != 200:
                raise SyncError(f"{where}: the portal answered HTTP {response.status}")
            body = await _bounded_body(response, settings.max_page_mb, where)
            content_type = response.headers.get("Content-Type", "")
            etag = response.headers.get("ETag")
    except TimeoutError:
        raise _Retryable(
            f"{where}: no answer within {settings.timeout_seconds:g} s (timeout)"
        ) from None
    except aiohttp.ClientError as exc:
        raise _Retryable(_client_error(exc, where)) from None
    try:
        document = load_json(body)
    except ValueError as exc:
        start = body[:40].decode("utf-8", "replace").strip()
        raise _Retryable(
            f"{where}: expected JSON, got {content_type or 'no content type'} starting {start!r}"
            f" ({exc})"
        ) from None
    if not isinstance(document, dict) or not isinstance(document.get("services"), list):
        raise _Retryable(f"{where}: expected an object with a 'services' list")
    return 200, document, etag


async def fetch_catalogue(
    session: aiohttp.ClientSession,
    settings: PortalSettings,
    token: SecretStr | None,
    etag: str | None,
    sleep: Sleep = asyncio.sleep,
) -> Catalogue | None:
    """Read every page of the portal's catalogue; None when the portal says nothing changed.

    Each page is retried with exponential backoff on timeouts, 5xx, cut-off bodies and non-JSON
    answers. Raises SyncError with the reason when the whole catalogue cannot be read.
    """
    headers = {"Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token.get_secret_value()}"
    records: dict[str, ServiceRecord] = {}
    warnings: list[str] = []
    first_etag: str | None = None
    total: int | None = None
    page = 1
    pages_read = 0
    while True:
        page_headers = dict(headers)
        if page == 1 and etag:
            page_headers["If-None-Match"] = etag
        for attempt in range(settings.retries + 1):
            try:
                status, document, page_etag = await _get_page(session, settings, page_headers, page)
                break
            except _Retryable as exc:
                if attempt == settings.retries:
                    tries = settings.retries + 1
                    raise SyncError(f"{exc} (after {tries} tries)") from None
                delay = settings.backoff_seconds * 2**attempt
                logger.warning("catalogue {}; retrying in {:.1f} s", exc, delay)
                await sleep(delay)
        if status == 304:
            if page != 1:
                raise SyncError(f"page {page}: HTTP 304 for a page other than the first")
            return None
        assert document is not None
        if page == 1:
            first_etag = page_etag
            total, said = announced_total(document.get("total"), "page 1")
            warnings += said
        answered = document.get("page")
        if isinstance(answered, int) and answered != page:
            # A portal that ignores the page asked for serves the same records under ever later
            # 'next' pages: without this, 10,000 requests before the sync gives up.
            raise SyncError(f"page {page}: the portal answered page {show_value(answered)} instead")
        pages_read += 1
        warnings += collect_records(
            document["services"], f"page {page}", records, settings.max_field_kb
        )
        next_page = document.get("next")
        if next_page is None:
            break
        if not isinstance(next_page, int) or next_page <= page:
            raise SyncError(
                f"page {page}: 'next' is {show_value(next_page)}, expected a later page or null"
            )
        if pages_read > 10_000:
            raise SyncError("more than 10,000 pages: the portal's paging does not end")
        page = next_page
    if total is not None and total != len(records):
        raise SyncError(
            f"read {len(records)} services but the portal announced {total}; "
            "the catalogue was not read whole"
        )
    return Catalogue(records=list(records.values()), etag=first_etag, warnings=warnings)
