"""Reading the past back: a quarter's probe figures, the catalogue as of a moment, lifecycle
periods, quiet windows and state changes, the same however much housekeeping has run since."""

from __future__ import annotations

import datetime as dt
import random

from monitord.config import parse_config
from monitord.store import Store
from monitord.store.histogram import bucket_of
from monitord.store.history import (
    ProbeStats,
    catalogue_as_of,
    probe_quarter,
    quiet_windows,
    service_periods,
    state_changes,
)
from monitord.store.models import (
    ProbeResultRow,
    QuietWindow,
    ServiceRevision,
    ServiceStateChange,
)
from monitord.store.retention import purge, roll_up
from monitord.timeutil import UTC, quarter_bounds

START, END = quarter_bounds("2026q3")


def at(month: int, day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, month, day, hour, minute, tzinfo=UTC)


def exact(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def seed_probes(store: Store) -> dict[str, list[float]]:
    """Ten days of the quarter's last weeks, a probe every 10 minutes for two services: svc-a
    fails now and then, svc-b's results of one hour were measured blind (all failed). Returns
    the successful latencies that count, per service."""
    rng = random.Random(7)
    latencies: dict[str, list[float]] = {"svc-a": [], "svc-b": []}
    with store.session() as session:
        for step in range(10 * 24 * 6):
            moment = at(9, 20) + dt.timedelta(minutes=10 * step)
            for service in ("svc-a", "svc-b"):
                blind = service == "svc-b" and moment.date() == dt.date(2026, 9, 25)
                ok = not blind and rng.random() > (0.02 if service == "svc-a" else 0.0)
                ms = rng.lognormvariate(4.5, 0.5)
                if ok and not blind:
                    latencies[service].append(ms)
                session.add(
                    ProbeResultRow(
                        service_id=service,
                        kind="availability",
                        target=f"https://{service}.example.test/",
                        at=moment,
                        success=ok,
                        duration_ms=ms,
                        facts={},
                        blind=blind,
                    )
                )
        # Another kind and a result outside the quarter count for nothing here.
        session.add(
            ProbeResultRow(
                service_id="svc-a",
                kind="tls",
                target="x",
                at=at(9, 21),
                success=False,
                duration_ms=5.0,
                facts={},
            )
        )
        session.add(
            ProbeResultRow(
                service_id="svc-a",
                kind="availability",
                target="x",
                at=at(10, 1, 0, 5),
                success=False,
                duration_ms=5.0,
                facts={},
            )
        )
    return latencies


def figures(stats: ProbeStats) -> tuple[object, ...]:
    return (
        stats.count,
        stats.failures,
        stats.blind,
        stats.hours_probed,
        stats.uptime,
        stats.p50_ms,
        stats.p95_ms,
        stats.p99_ms,
        stats.buckets,
    )


def quarter(store: Store) -> dict[str, ProbeStats]:
    with store.session() as session:
        return probe_quarter(session, START, END)


def test_a_quarters_figures_are_the_same_from_raw_results_roll_ups_or_both(store: Store) -> None:
    latencies = seed_probes(store)
    raw_only = quarter(store)
    a, b = raw_only["svc-a"], raw_only["svc-b"]
    assert a.count == 1440 and 0 < a.failures < 60
    assert a.uptime == (1440 - a.failures) / 1440
    assert a.blind == 0 and a.hours_probed == 240
    # svc-b's blind day is left out: neither probed nor failed, and its uptime stays whole.
    assert (b.count, b.failures, b.blind, b.hours_probed, b.uptime) == (1296, 0, 144, 216, 1.0)
    for stats in (a, b):
        for q, found in ((0.5, stats.p50_ms), (0.95, stats.p95_ms), (0.99, stats.p99_ms)):
            assert found is not None
            assert bucket_of(found) == bucket_of(exact(latencies[stats.service_id], q))

    # Half rolled up (the daemon stopped mid-quarter): roll-ups and raw results together.
    roll_up(store, at(9, 25, 13, 20))
    assert {k: figures(v) for k, v in quarter(store).items()} == {
        k: figures(v) for k, v in raw_only.items()
    }
    # A year on: every hour rolled up, the successful raw results purged.
    later = at(10, 1) + dt.timedelta(days=365)
    roll_up(store, later)
    settings = parse_config(
        {"store": {"retention_days": 400}, "probes": {"raw_retention_days": 30}}, "t", env={}
    )
    assert purge(store, settings, later)["probe_results"] > 0
    with store.session() as session:
        assert session.query(ProbeResultRow).filter(ProbeResultRow.success).count() == 0
    assert {k: figures(v) for k, v in quarter(store).items()} == {
        k: figures(v) for k, v in raw_only.items()
    }


def record_results(store: Store, *results: tuple[dt.datetime, bool]) -> None:
    """svc-a's availability results (when its probe started, whether it passed), written now."""
    with store.session() as session:
        session.add_all(
            ProbeResultRow(
                service_id="svc-a",
                kind="availability",
                target="https://svc-a.example.test/",
                at=moment,
                success=ok,
                duration_ms=50.0,
                facts={},
            )
            for moment, ok in results
        )


def test_a_result_written_after_its_hour_was_rolled_up_is_counted_once(store: Store) -> None:
    # The probe started at 10:59:48 timed out and was written at 11:00:08, after housekeeping
    # at 11:00:03 had rolled 10:00 up: reports read rolled hours from the roll-ups only, so the
    # failure was never counted (and its raw row purged later).
    hour = at(9, 1, 10)
    record_results(store, *((hour + dt.timedelta(minutes=m, seconds=48), True) for m in range(59)))
    assert roll_up(store, at(9, 1, 11, 0) + dt.timedelta(seconds=3)) == 0  # not whole yet
    record_results(store, (hour + dt.timedelta(minutes=59, seconds=48), False))
    assert roll_up(store, at(9, 1, 11, 10)) == 1
    # A daemon cut off from the store writes what it measured once it is back, hours later.
    record_results(store, (hour + dt.timedelta(minutes=30), False))
    roll_up(store, at(9, 1, 13, 10))
    roll_up(store, at(9, 1, 14, 10))  # and it is not counted twice
    a = quarter(store)["svc-a"]
    assert (a.count, a.failures, a.hours_probed) == (61, 2, 1)
    # The successful raw results of that hour go; the figures stay.
    later = at(10, 1) + dt.timedelta(days=365)
    assert purge(store, parse_config({}, "t", env={}), later)["probe_results"] == 59
    assert figures(quarter(store)["svc-a"]) == figures(a)


def test_a_quarter_without_probes_has_no_figures(store: Store) -> None:
    assert quarter(store) == {}


def revision(
    service: str,
    since: dt.datetime,
    until: dt.datetime | None,
    gone: bool = False,
    **record: object,
) -> ServiceRevision:
    return ServiceRevision(
        service_id=service, valid_from=since, valid_to=until, gone=gone, record=record
    )


def test_the_catalogue_and_lifecycle_periods_as_they_were(store: Store) -> None:
    with store.session() as session:
        session.add_all(
            [
                revision("svc-a", at(6, 1), at(8, 1), name="旧名称", status="online"),
                revision("svc-a", at(8, 1), at(8, 20), name="新名称", status="suspended"),
                revision("svc-a", at(8, 20), None, name="新名称", status="online"),
                revision("svc-b", at(8, 10), at(9, 1), name="二", status="pending"),
                revision("svc-b", at(9, 1), at(9, 2), name="二", status="pending"),
                revision("svc-b", at(9, 2), None, gone=True, name="二", status="pending"),
                revision("svc-c", at(10, 5), None, name="丙", status="online"),
            ]
        )
    with store.session() as session:
        assert catalogue_as_of(session, at(7, 1)) == {
            "svc-a": {"name": "旧名称", "status": "online"}
        }
        then = catalogue_as_of(session, at(8, 15))
        assert then["svc-a"]["status"] == "suspended" and then["svc-a"]["name"] == "新名称"
        assert set(then) == {"svc-a", "svc-b"}
        assert set(catalogue_as_of(session, at(9, 5))) == {"svc-a"}  # svc-b gone
        assert set(catalogue_as_of(session, at(12, 1))) == {"svc-a", "svc-c"}
        assert catalogue_as_of(session, at(8, 15), services=["svc-b", "svc-x"]) == {
            "svc-b": {"name": "二", "status": "pending"}
        }
        assert service_periods(session, START, END) == {
            "svc-a": [
                (START, at(8, 1), "online"),
                (at(8, 1), at(8, 20), "suspended"),
                (at(8, 20), END, "online"),
            ],
            "svc-b": [(at(8, 10), at(9, 2), "pending"), (at(9, 2), END, "gone")],
        }


def test_quiet_windows_and_state_changes_of_a_period(store: Store) -> None:
    recorded = at(6, 1)
    with store.session() as session:
        session.add_all(
            [
                QuietWindow(
                    kind="maintenance",
                    starts_at=at(6, 30, 22),
                    ends_at=at(7, 1, 2),
                    reason="跨季度",
                    recorded_at=recorded,
                ),
                QuietWindow(
                    kind="maintenance",
                    starts_at=at(6, 2),
                    ends_at=at(6, 3),
                    reason="上季度",
                    recorded_at=recorded,
                ),
                QuietWindow(
                    kind="suspension",
                    service_id="svc-a",
                    starts_at=at(5, 1),
                    ends_at=at(5, 2),
                    reason="逾期未恢复",
                    recorded_at=recorded,
                ),
                QuietWindow(
                    kind="suspension",
                    service_id="svc-b",
                    starts_at=at(5, 1),
                    ends_at=at(9, 1),
                    ended_at=at(6, 1),
                    reason="已恢复",
                    recorded_at=recorded,
                ),
                QuietWindow(
                    kind="suspension",
                    service_id="svc-c",
                    starts_at=at(8, 1),
                    ends_at=at(8, 2),
                    ended_at=at(7, 20),
                    reason="提前撤回",
                    recorded_at=recorded,
                ),
                QuietWindow(
                    kind="maintenance",
                    starts_at=END,
                    ends_at=None,
                    reason="下季度",
                    recorded_at=recorded,
                ),
                ServiceStateChange(
                    service_id="svc-a",
                    at=at(7, 3),
                    from_state="up",
                    to_state="down",
                    reason="timeout",
                ),
                ServiceStateChange(
                    service_id="svc-a", at=at(6, 3), from_state="unknown", to_state="up"
                ),
                ServiceStateChange(service_id="svc-a", at=END, from_state="down", to_state="up"),
            ]
        )
    with store.session() as session:
        reasons = [w.reason for w in quiet_windows(session, START, END)]
        # An overdue suspension still applies; one resumed before the quarter does not.
        assert reasons == ["逾期未恢复", "跨季度"]
        assert [(c.at, c.to_state) for c in state_changes(session, START, END)] == [
            (at(7, 3), "down")
        ]
