"""The contract probe: does the service answer with a code its filing documents (6.3.2 c)?

Two codes are checked: the HTTP status against the filing's expected statuses, and, where the
filing names a business-code field (`probe.expect_codes.field`), that field of the JSON body
against the documented codes (`expect_codes.ok` and the keys of `return_codes`). An answer that
is not JSON when a business code is expected has no documented code, so it counts as
undocumented; a body over `max_body_bytes` (1 MiB) is not read whole, and its code is not
judged. Filed codes and answered codes become text the same way (`code_text`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from monitord.textable import load_json
from monitord.types import ProbeContext, ProbeResult, Target
from probes.http import PROBE_ERRORS, HttpSpec, error_text, failure, fetch, probe_url, result

KIND = "contract"
_MISSING = object()


@dataclass(frozen=True)
class ContractSpec(HttpSpec):
    """The documented codes: HTTP statuses and, optionally, a JSON business-code field."""

    expect_status: tuple[int, ...] = (200,)
    code_field: str | None = None
    """Dotted path of the business code in the JSON body (`code`, `data.code`); None: no check."""
    ok_codes: tuple[str, ...] = ()
    """Codes that mean success (`expect_codes.ok`)."""
    return_codes: tuple[tuple[str, str], ...] = ()
    """Every documented code with its meaning (`return_codes`), as (code, meaning) pairs."""


def code_text(value: Any) -> str | None:
    """A business code as text, spelt as JSON spells it, for a filing and an answer alike.

    null is no code (None); true and false are "true" and "false"; a whole number is the same
    code however written (1, 1.0); a string is itself. Anything else (an object, a list) is no
    code either.
    """
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _field(document: Any, path: str) -> Any:
    value = document
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


async def probe(target: Target, spec: ContractSpec, ctx: ProbeContext) -> ProbeResult:
    """Request the probe URL and check its HTTP status and business code against the filing.

    Success means both codes are documented. An undocumented code is a fact, judged by the
    `undocumented_return_code` rule.
    """
    started_at = ctx.clock()
    start = time.perf_counter()
    try:
        async with ctx.connection(), asyncio.timeout(spec.timeout_s):
            fetched = await fetch(ctx, spec, probe_url(target, spec))
    except PROBE_ERRORS as exc:
        return failure(KIND, target, started_at, start, {}, error_text(exc, spec.timeout_s))
    meanings = dict(spec.return_codes)
    documented = set(spec.ok_codes) | set(meanings)
    facts: dict[str, Any] = {
        "http_status": fetched.status,
        "http_status_documented": fetched.status in spec.expect_status,
        "content_type": fetched.content_type,
        "code_field": spec.code_field,
        "business_code": None,
        "business_code_documented": None,
        "business_code_ok": None,
        "business_code_meaning": None,
        "body_error": None,
    }
    if spec.code_field and fetched.truncated:
        # The code may well be in the part not read: no verdict, rather than "not JSON".
        facts["body_error"] = (
            f"body over {spec.max_body_bytes} bytes, cut at that limit: business code not read"
        )
    elif spec.code_field:
        try:
            document = load_json(fetched.body, constants=False)
        except ValueError:
            document = _MISSING
            facts["body_error"] = f"body is not JSON ({fetched.content_type})"
        code = _field(document, spec.code_field) if document is not _MISSING else _MISSING
        # Codes are compared as text: filings write "0" where services send 0.
        text = None if code is _MISSING else code_text(code)
        if text is None:
            missing = f"no field {spec.code_field!r}"
            if code is None:
                missing = f"field {spec.code_field!r} is null"
            elif isinstance(code, dict | list):
                shape = "an object" if isinstance(code, dict) else "a list"
                missing = f"field {spec.code_field!r} is {shape}, not a code"
            facts["body_error"] = facts["body_error"] or missing
            facts["business_code_documented"] = False
        else:
            facts["business_code"] = text
            facts["business_code_documented"] = text in documented
            facts["business_code_ok"] = text in spec.ok_codes
            facts["business_code_meaning"] = meanings.get(text)
    problems = []
    if not facts["http_status_documented"]:
        problems.append(f"HTTP status {fetched.status} is not documented")
    if facts["business_code_documented"] is False:
        problems.append(
            f"business code {facts['business_code']!r} is not documented"
            if facts["business_code"] is not None
            else f"no business code: {facts['body_error']}"
        )
    return result(
        KIND,
        target,
        started_at,
        start,
        success=not problems,
        facts=facts,
        error="; ".join(problems) or None,
    )
