"""Clause 9.2: each service's score from its parts, the weights of the config, and the ranking
overall and per source tier."""

from __future__ import annotations

import datetime as dt

import pytest

from monitord.compliance import FORMULA, evaluate_quarter, score_services
from monitord.compliance.evaluation import availability_part, latency_part, weighted_score
from monitord.config import Settings, parse_config
from monitord.errors import ConfigError
from monitord.store import Store
from monitord.store.models import Complaint, Incident
from monitord.types import ServiceScore
from tests.compliance.seed import NOW, Q3, START, online_all_quarter, rollups, scan, t


def seed(store: Store) -> None:
    """Three services: a perfect one, one with trouble, one never probed (another tier)."""
    with store.session() as s:
        online_all_quarter(s, "fine", source="province")
        rollups(s, "fine")
        scan(s, "fine", t("2026-08-05 10:00"))
        online_all_quarter(s, "poor", source="province")
        rollups(s, "poor", failures=3, latency_ms=6000.0)  # 95 % up, p95 about 6 s
        s.add(
            Incident(
                kind="outage",
                klass="availability",
                severity="high",
                group_key="a",
                services=["poor"],
                detected_at=t("2026-08-01 10:00"),
            )
        )
        for n in range(3):
            s.add(
                Complaint(
                    external_id=f"c{n}",
                    service_id="poor",
                    received_at=t("2026-09-01 10:00"),
                    imported_at=NOW,
                )
            )
        s.add(
            Complaint(
                external_id="old",
                service_id="poor",
                received_at=START - dt.timedelta(days=1),
                imported_at=NOW,
            )
        )
        online_all_quarter(s, "silent", source="district")


def scores_of(store: Store, settings: Settings) -> dict[str, ServiceScore]:
    with store.session() as session:
        verdicts = evaluate_quarter(session, settings, Q3, NOW)
        return {s.service_id: s for s in score_services(session, settings, Q3, verdicts, NOW)}


def test_services_are_scored_from_their_parts_and_ranked(sqlite_store: Store) -> None:
    seed(sqlite_store)
    scores = scores_of(sqlite_store, Settings())
    fine, poor, silent = scores["fine"], scores["poor"], scores["silent"]
    assert fine.parts == {
        "availability": 100.0,
        "latency": 100.0,
        "incidents": 100.0,
        "findings": 100.0,
        "compliance": 100.0,
        "complaints": 100.0,
    }
    assert fine.score == 100.0 and (fine.rank, fine.tier_rank, fine.tier) == (1, 1, "province")
    assert poor.parts["availability"] == 2.0  # 0.1 % allowed down, 5 % down
    assert poor.parts["incidents"] == 75.0  # one high incident
    assert poor.parts["complaints"] == 70.0  # three this quarter; the older one not counted
    assert 0 < poor.parts["latency"] < 60
    assert poor.parts["compliance"] < 100
    assert poor.score < fine.score and poor.tier_rank == 2
    # Never probed: no availability nor latency part; the rest is weighed up to 1, and it is
    # listed unranked after the ranked ones (on its other parts alone it came first).
    assert "availability" not in silent.parts and "latency" not in silent.parts
    assert silent.score > fine.score * 0.5
    assert (silent.tier, silent.rank, silent.tier_rank) == ("district", 0, 0)
    assert sorted(s.rank for s in scores.values()) == [0, 1, 2]


def test_the_weights_of_the_config_decide_the_score(sqlite_store: Store) -> None:
    seed(sqlite_store)
    only_complaints = parse_config(
        {
            "evaluation": {
                "availability": 0,
                "latency": 0,
                "incidents": 0,
                "findings": 0,
                "compliance": 0,
                "complaints": 1,
            }
        },
        "test",
    )
    assert scores_of(sqlite_store, only_complaints)["poor"].score == 70.0


def test_parts_and_the_weighted_score() -> None:
    assert availability_part(99.95, 99.9) == 100.0
    assert availability_part(99.8, 99.9) == pytest.approx(50.0)
    assert latency_part(6000.0, 3000.0) == 50.0
    weights = Settings().evaluation.weights()
    assert weighted_score(
        {
            "availability": None,
            "latency": None,
            "incidents": 50.0,
            "findings": 50.0,
            "compliance": 50.0,
            "complaints": 50.0,
        },
        weights,
    ) == pytest.approx(50.0)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"availability": 0.5}, "sum to 1.2, expected 1"),
        ({"availability": 0.55, "latency": -0.1}, "evaluation.latency = -0.1: expected at least"),
    ],
)
def test_weights_that_do_not_sum_to_one_are_refused(table: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        parse_config({"evaluation": table}, "site.toml")


def test_the_formula_is_printed_in_chinese() -> None:
    assert "综合得分" in FORMULA and "[evaluation]" in FORMULA


def test_the_formula_says_every_incident_counts_as_the_score_does(sqlite_store: Store) -> None:
    seed(sqlite_store)
    # poor's one incident is an outage (availability), and it costs 25 points.
    assert scores_of(sqlite_store, Settings())["poor"].parts["incidents"] == 75.0
    assert "安全事件 =" not in FORMULA
    assert "事件 = max(0, 100 − Σ 本季度每起事件扣分)，可用性事件与安全事件均计入" in FORMULA


def test_a_service_never_probed_loses_no_compliance_for_uptime_or_latency(
    sqlite_store: Store,
) -> None:
    seed(sqlite_store)
    with sqlite_store.session() as session:
        verdicts = evaluate_quarter(session, Settings(), Q3, NOW)
    mine = [v for v in verdicts if v.service_id == "silent"]
    assert {"uptime_target", "latency_target"}.isdisjoint(v.rule for v in mine)
    expected = 100.0 * sum(v.passed for v in mine) / len(mine)
    assert scores_of(sqlite_store, Settings())["silent"].parts["compliance"] == round(expected, 1)
