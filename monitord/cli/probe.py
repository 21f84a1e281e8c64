"""`monitord probe`: run probes ad hoc against a URL, one service, or every online service."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from monitord.cli.common import (
    add_wide,
    catalogue_id,
    existing_app,
    progress_line,
    settings_for,
)
from monitord.errors import UsageError
from monitord.redact import mask_url, mask_urls, mask_urls_within
from monitord.textable import format_table
from monitord.timeutil import system_clock
from monitord.types import PROBE_KINDS

# The probes, aiohttp and the store are imported by the handler: registering `probe` must not
# load them into every `monitord` process (see monitord.cli).
if TYPE_CHECKING:
    from monitord.config import Settings
    from monitord.probing import RoundReport


T = TypeVar("T")
PROGRESS_SECONDS = 5.0
"""How often `probe --all` says how far it got: a round over thousands of services, some of
them timing out, takes a minute."""


class _Progress:
    """Counts a round's probes as they end and, while the round runs, says on stderr every
    PROGRESS_SECONDS how many are done (never for a round quicker than that): stdout keeps the
    table alone. A timer, not the ends: probes hanging until their timeout end nothing."""

    def __init__(self) -> None:
        self.done = 0
        self.total = 0

    def __call__(self, done: int, total: int) -> None:
        self.done, self.total = done, total

    async def told_while(self, work: Coroutine[Any, Any, T]) -> T:
        """Await `work`, saying how far it got every PROGRESS_SECONDS until it ends."""
        import asyncio  # here: asyncio loads ssl, which every other command must not pay for

        teller = asyncio.create_task(self._tell())
        try:
            return await work
        finally:
            teller.cancel()

    async def _tell(self) -> None:
        import asyncio

        while True:
            await asyncio.sleep(PROGRESS_SECONDS)
            if self.done < self.total:
                progress_line(f"{self.done:,} of {self.total:,} probes done")


def _result_objects(report: RoundReport) -> list[dict[str, Any]]:
    return [
        {
            "kind": r.kind,
            "target": mask_url(r.target),
            "service_id": r.service_id,
            "success": r.success,
            "duration_ms": round(r.duration_ms, 1),
            "error": mask_urls(r.error) if r.error else None,
            "facts": mask_urls_within(r.facts),
            "findings": [
                {"rule": f.rule, "clause": f.clause, "severity": f.severity, "summary": f.summary}
                for f in report.findings.get(i, [])
            ],
        }
        for i, r in enumerate(report.results)
    ]


def _settings(args: argparse.Namespace) -> Settings:
    """The config's settings, with --ca-file trusted besides the configured bundle."""
    from monitord.config import ca_bundle_problem

    settings = settings_for(args)
    if not args.ca_file:
        return settings
    problem = ca_bundle_problem(args.ca_file)
    if problem is not None:
        raise UsageError(f"--ca-file {args.ca_file!r}: expected {problem}")
    probes_settings = settings.probes.model_copy(update={"ca_file": args.ca_file})
    return settings.model_copy(update={"probes": probes_settings})


async def _probe_url(settings: Settings, url: str, kinds: list[str]) -> RoundReport:
    import rules
    from monitord.probing import RoundReport, probe_context, run_probes

    async with probe_context(settings.probes, system_clock) as ctx:
        results = await run_probes(ctx, settings.probes, [(None, k, url) for k in kinds])
    report = RoundReport(probes=len(results), results=results)
    report.findings = {i: rules.probe_findings(r) for i, r in enumerate(results)}
    return report


def cmd_probe(args: argparse.Namespace) -> int:
    """Run probes and print their facts and findings."""
    import probes
    from monitord import aio
    from monitord.config import http_url
    from monitord.probing import probe_round

    chosen = [args.kind] if args.kind else None
    if sum(map(bool, (args.url, args.service, args.all))) > 1:
        # --service with --all probed the one service and ignored --all without a word.
        raise UsageError("give a URL, --service ID or --all, not several")
    if args.url:
        try:
            http_url(args.url)
        except ValueError as exc:
            # A URL without a host or with port 99999 "probed" into a crash per kind.
            raise UsageError(f"{args.url!r}: expected {exc}") from None
        report = aio.run(_probe_url(_settings(args), args.url, chosen or list(probes.PROBES)))
    elif args.service or args.all:
        settings = _settings(args)
        if args.all:
            from monitord.runtime.heap import tune_collector

            tune_collector()  # a round over every service: collected as the daemon's are
        ids = [args.service] if args.service else None
        every_kind = list(probes.PROBES) if args.service else ["availability"]
        kinds = chosen or every_kind
        progress = _Progress() if args.all else None
        with existing_app(settings) as app:
            round_ = probe_round(
                app.store,
                settings,
                app.clock,
                service_ids=ids,
                kinds=kinds,
                spread=False,
                progress=progress,
            )
            report = aio.run(progress.told_while(round_) if progress else round_)
        if args.service and not report.results:
            raise UsageError(
                f"--service {args.service!r}: no such service with a URL in the "
                "store (run `monitord sync` first)"
            )
        if args.all and not report.results:
            # An empty table and exit 0 read as "every service is fine".
            raise UsageError(
                "--all: the store holds no online service with a URL (run `monitord sync` first)"
            )
    else:
        raise UsageError("give a URL, --service ID or --all")
    objects = _result_objects(report)
    # A script can tell: 1 when a probe failed (a refused port, a bad status, an expired
    # certificate), 0 when every one succeeded.
    status = 0 if all(o["success"] for o in objects) else 1
    if args.json:
        for obj in objects:
            print(json.dumps(obj, ensure_ascii=False))
        return status
    rows = [
        [
            o["kind"],
            o["service_id"] or o["target"],
            "ok" if o["success"] else "FAIL",
            *_fact_cells(o["facts"]),
            f"{o['duration_ms']:.0f}",
            o["error"] or "",
            "; ".join(f"{f['rule']}({f['severity']})" for f in o["findings"]),
        ]
        for o in objects
    ]
    headers = ["KIND", "TARGET", "RESULT", "HTTP", "TLS", "CERT DAYS", "MS", "ERROR", "FINDINGS"]
    print(format_table(headers, rows, 60))
    return status


def _fact_cells(facts: dict[str, Any]) -> list[str]:
    """The facts that matter at a glance: HTTP status, TLS version, days the certificate has
    left ("-" where the probe did not learn them)."""
    days = facts.get("days_to_expiry")
    # Whole days left, as the rules count them: -0.5 (expired twelve hours ago) is -1, not 0.
    whole = None if days is None else math.floor(days)
    values = (_http_status(facts), facts.get("tls_version"), whole)
    return ["-" if value is None else str(value) for value in values]


def _http_status(facts: dict[str, Any]) -> Any:
    """The HTTP status a probe got: availability's `status`, contract's `http_status`, the
    desktop client's for compatibility (the one the others are compared with)."""
    for name in ("status", "http_status"):
        if facts.get(name) is not None:
            return facts[name]
    clients = facts.get("clients")
    desktop = clients.get("desktop") if isinstance(clients, dict) else None
    return desktop.get("status") if isinstance(desktop, dict) else None


def add_probe_command(sub: Any) -> None:
    """Register `probe` on the main parser's subparsers."""
    p = sub.add_parser(
        "probe",
        help="run probes now against a URL, a service, or all services (exit 1: one failed)",
        description="run probes now against a URL, a service, or all services; exits 1 when "
        "a probe failed, 0 when every one succeeded",
    )
    p.add_argument("url", nargs="?", help="any http(s) URL")
    p.add_argument(
        "--service", metavar="ID", type=catalogue_id, help="a catalogue service's whole probe set"
    )
    p.add_argument("--all", action="store_true", help="one round over every online service")
    p.add_argument("--kind", choices=list(PROBE_KINDS), help="only this probe kind")
    p.add_argument("--ca-file", metavar="PEM", help="also trust this CA bundle")
    p.add_argument("--json", action="store_true", help="one JSON object per probe")
    add_wide(p)
    p.set_defaults(handler=cmd_probe)
