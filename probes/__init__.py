"""Probe kinds: one module each, one async function with one signature, one registry.

    async def probe(target: Target, spec: <Kind>Spec, ctx: ProbeContext) -> ProbeResult

`PROBES` maps each kind's name (`monitord.types.PROBE_KINDS`, which config validation and the
CLI check against without importing the probes) to its function and spec class. `spec_for`
builds a kind's spec from a catalogue service's `probe` object and `return_codes`, with defaults
for whatever is missing or malformed (the catalogue is another team's system). A probe never
writes the store, sends alerts or reads the config: it returns facts, and `rules.probe_rules`
judges them.

Kinds: availability (every interval), tls, compatibility and contract (slow schedule).
Shared pieces: `probes.http` (requests, timings, `make_session`), `probes.tlsinfo` (handshakes,
certificates, weak suites, OCSP), `probes.resumption` (availability's resumed TLS sessions,
through pyOpenSSL), and `monitord.netguard` (the deny list, which the alerts and
the scans use too).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NamedTuple

from monitord.netguard import DEFAULT_DENIED_NETWORKS, DeniedTargetError, denied_network
from monitord.types import (
    PROBE_METHODS,
    ProbeContext,
    ProbeResult,
    Spec,
    Target,
    is_http_status,
    is_probe_path,
)
from probes import availability, compatibility, contract, tls
from probes.http import make_session, timing_trace_config
from probes.tlsinfo import trust_context

ProbeFunction = Callable[[Target, Any, ProbeContext], Awaitable[ProbeResult]]


class ProbeKind(NamedTuple):
    """A registered probe kind: its function and the spec class it takes."""

    probe: ProbeFunction
    spec: type[Spec]


PROBES: dict[str, ProbeKind] = {
    "availability": ProbeKind(availability.probe, availability.AvailabilitySpec),
    "tls": ProbeKind(tls.probe, tls.TlsSpec),
    "compatibility": ProbeKind(compatibility.probe, compatibility.CompatibilitySpec),
    "contract": ProbeKind(contract.probe, contract.ContractSpec),
}
_FIELD_NAMES = {
    kind: frozenset(f.name for f in dataclasses.fields(registered.spec))
    for kind, registered in PROBES.items()
}
"""Each kind's spec fields (`spec_for` asks for every probe of every round)."""


def _statuses(value: Any) -> tuple[int, ...] | None:
    if not isinstance(value, list | tuple):
        return None
    codes = tuple(v for v in value if is_http_status(v))
    return codes or None


def _catalogue_fields(
    probe: Mapping[str, Any], return_codes: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Every spec field the catalogue can set, read leniently; the caller keeps what applies."""
    fields: dict[str, Any] = {}
    path = probe.get("path")
    if isinstance(path, str) and is_probe_path(path):
        fields["path"] = path.strip()
    method = probe.get("method")
    if isinstance(method, str) and method.upper() in PROBE_METHODS:
        fields["method"] = method.upper()
    statuses = _statuses(probe.get("expect_status"))
    if statuses:
        fields["expect_status"] = statuses
    keyword = probe.get("keyword")
    if isinstance(keyword, str) and keyword:
        fields["keyword"] = keyword
    codes = probe.get("expect_codes")
    if isinstance(codes, Mapping) and isinstance(codes.get("field"), str) and codes["field"]:
        fields["code_field"] = codes["field"]
        ok = codes.get("ok")
        if isinstance(ok, list | tuple):
            fields["ok_codes"] = tuple(
                text for text in (contract.code_text(c) for c in ok) if text is not None
            )
    if isinstance(return_codes, Mapping) and return_codes:
        fields["return_codes"] = tuple((str(k), str(v)) for k, v in return_codes.items())
    if fields.get("method") == "HEAD" and "code_field" in fields:
        # A HEAD answer has no body to carry the code: GET, the default (a filing problem).
        del fields["method"]
    # A service whose probe reads a business code is a JSON API, as the contract probe reads
    # it: every client must get JSON. Documented return_codes alone do not make its page one.
    fields["expect_json"] = "code_field" in fields
    if probe.get("mobile") is False:
        fields["clients"] = ("desktop",)
    return fields


def spec_for(
    kind: str,
    probe: Mapping[str, Any] | None = None,
    *,
    return_codes: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> Spec:
    """Build the spec of probe `kind` for a catalogue service.

    `probe` and `return_codes` are the service's fields as in the catalogue API (either may be
    missing); malformed values fall back to the defaults. `overrides` come from monitord's own
    config (timeout_s, denied_networks, slo_ms, …) and win over the catalogue. Raises KeyError
    for an unknown kind and TypeError naming an override the kind's spec does not have.
    """
    spec_class = PROBES[kind].spec
    names = _FIELD_NAMES[kind]
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise TypeError(f"{kind} probe spec has no field {', '.join(unknown)}")
    catalogue = _catalogue_fields(probe or {}, return_codes)
    values = {k: v for k, v in catalogue.items() if k in names}
    values.update(overrides)
    if "denied_networks" in values:
        values["denied_networks"] = tuple(values["denied_networks"])
    return spec_class(**values)


__all__ = [
    "DEFAULT_DENIED_NETWORKS",
    "PROBES",
    "DeniedTargetError",
    "ProbeFunction",
    "ProbeKind",
    "denied_network",
    "make_session",
    "spec_for",
    "timing_trace_config",
    "trust_context",
]
