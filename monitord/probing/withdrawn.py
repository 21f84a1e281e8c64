"""Services no longer probed: what the probes said of them is let go.

A service taken offline, back to pending, gone from the catalogue or left without a URL is not
probed any more (`targets.load_targets`), so nothing would ever resolve the findings the probes
raised while it was watched: an outage incident of a withdrawn service stayed open for ever, the
page and `monitord status` counting it down. After each catalogue sync those findings are
resolved (their incidents then end as any whose findings are all gone) and the service's state
machine goes back to unknown, to start afresh if the service comes back.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update

import rules
from monitord.probing.state import OWNED_RULES
from monitord.probing.targets import not_probed
from monitord.store import Store
from monitord.store.findings import resolve_findings
from monitord.store.models import Finding, Service, ServiceState
from monitord.types import PROBE_KINDS


def probe_rules() -> list[str]:
    """Every rule whose findings the probes raise: the state machine's and probes.toml's."""
    names = set(OWNED_RULES)
    for kind in PROBE_KINDS:
        names.update(rules.probe_rule_names(kind))
    return sorted(names)


def release_withdrawn(store: Store, now: dt.datetime) -> list[str]:
    """Resolve the probe findings of the services no longer probed and set their state back to
    unknown; the ids of those services, sorted."""
    names = probe_rules()
    with store.session() as session:
        unprobed = select(Service.id).where(not_probed())
        judged = session.scalars(
            select(ServiceState.service_id).where(
                ServiceState.state != "unknown", ServiceState.service_id.in_(unprobed)
            )
        ).all()
        found = session.scalars(
            select(Finding.subject).where(
                Finding.state == "open",
                Finding.subject_kind == "service",
                Finding.rule.in_(names),
                Finding.subject.in_(unprobed),
            )
        ).all()
        withdrawn = set(judged) | set(found)
        if not withdrawn:
            return []
        resolve_findings(session, names, "service", set(), now, subjects=withdrawn)
        session.execute(
            update(ServiceState)
            .where(ServiceState.service_id.in_(sorted(withdrawn)))
            .values(state="unknown", since=now, failures=0, successes=0, failing_since=None)
        )
    return sorted(withdrawn)
