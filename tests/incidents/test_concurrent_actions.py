"""The same action on an incident taken twice at once (two people, a client retrying): the
first changes it, the second waits for the first and is refused as the incident now stands."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from monitord.config import parse_config
from monitord.errors import UsageError
from monitord.incidents import acknowledge, notify_management, open_manual, resolve
from monitord.store import Store
from monitord.store.models import AuditEntry, IncidentEvent, Service
from tests.conftest import FakeClock

PARTS = {"scope": "全市", "harm": "信息可能外泄", "measures": "已下线", "rectification": "复测"}
SETTINGS = parse_config(
    {"alerts": {"oncall": ["json://127.0.0.1:9/oncall"], "management": ["json://127.0.0.1:9/m"]}},
    "test",
    env={},
)

Action = Callable[[Session, int, str, FakeClock], object]
ACTIONS: dict[str, tuple[Action, str, str]] = {
    "ack": (
        lambda session, i, who, clock: acknowledge(session, i, who, clock()),
        "incident.ack",
        "was already acknowledged by zhang.san",
    ),
    "resolve": (
        lambda session, i, who, clock: resolve(session, i, who, clock()),
        "incident.resolve",
        "is already resolved",
    ),
    "out-of-band": (
        lambda session, i, who, clock: notify_management(
            session, SETTINGS, i, PARTS, who, clock(), out_of_band="电话", at=clock()
        ),
        "incident.notify",
        "",  # a second call recorded is a follow-up, numbered after the first
    ),
}


def open_incident(store: Store, clock: FakeClock) -> int:
    with store.session() as session:
        session.add(
            Service(
                id="svc-0001", name="服务1", status="online", first_seen=clock(), last_seen=clock()
            )
        )
        session.flush()
        incident = open_manual(
            session, SETTINGS, "data_exposure", ["svc-0001"], "电话报告", "li.si", clock()
        )
        return incident.id


@pytest.mark.parametrize("name", list(ACTIONS))
def test_the_same_action_at_once_is_taken_once_and_the_second_sees_the_first(
    store: Store, clock: FakeClock, name: str
) -> None:
    act, audited, refusal = ACTIONS[name]
    incident_id = open_incident(store, clock)
    second: list[object] = []

    def act_second() -> None:
        try:
            with store.session() as session:
                act(session, incident_id, "wang.wu", clock)
                second.append(
                    session.scalars(
                        select(IncidentEvent.detail)
                        .where(IncidentEvent.incident_id == incident_id)
                        .order_by(IncidentEvent.id.desc())
                    ).first()
                )
        except UsageError as exc:
            second.append(exc)

    thread = threading.Thread(target=act_second)
    with store.session() as session:
        act(session, incident_id, "zhang.san", clock)
        thread.start()
        # Long enough for the second to finish when nothing holds it back (its read saw the
        # incident before this change was committed); it waits for this commit otherwise.
        thread.join(timeout=1.0)
    thread.join()
    [outcome] = second
    with store.session() as session:
        audits = session.scalar(
            select(func.count()).select_from(AuditEntry).where(AuditEntry.action == audited)
        )
    if refusal:
        assert isinstance(outcome, UsageError) and refusal in str(outcome)
        assert audits == 1
    else:
        assert isinstance(outcome, dict) and outcome["number"] == 2
        assert audits == 2
