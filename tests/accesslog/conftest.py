"""Generated portal traffic: normal days, and the same days with every behaviour planted."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import pytest

from monitord.demo import synth


@dataclass(frozen=True)
class Logs:
    """An nginx log and the matching JSON audit log, with the events that made them."""

    nginx: Path
    audit: Path
    events: list[synth.Event]


def _write(folder: Path, events: list[synth.Event]) -> Logs:
    folder.mkdir(parents=True, exist_ok=True)
    logs = Logs(folder / "access.log", folder / "audit.jsonl", events)
    synth.write_logs(events, logs.nginx, logs.audit)
    return logs


@pytest.fixture(scope="session")
def world() -> synth.World:
    return synth.make_world(random.Random(11), services=20, companies=120)


@pytest.fixture(scope="session")
def normal_events(world: synth.World) -> list[synth.Event]:
    # Monday 1 to Wednesday 3 June 2026: working days, no statutory holiday.
    return synth.normal_traffic(world, random.Random(12), 24_000, synth.local(2026, 6, 1), 3)


@pytest.fixture(scope="session")
def planted_events(world: synth.World, normal_events: list[synth.Event]) -> list[synth.Event]:
    plants = synth.plant_all(
        world, random.Random(13), synth.local(2026, 6, 2, 10), synth.local(2026, 6, 2, 23, 30)
    )
    return synth.merged(normal_events, plants)


@pytest.fixture(scope="session")
def normal_logs(tmp_path_factory: pytest.TempPathFactory, normal_events: list[synth.Event]) -> Logs:
    return _write(tmp_path_factory.mktemp("normal"), normal_events)


@pytest.fixture(scope="session")
def planted_logs(
    tmp_path_factory: pytest.TempPathFactory, planted_events: list[synth.Event]
) -> Logs:
    return _write(tmp_path_factory.mktemp("planted"), planted_events)
