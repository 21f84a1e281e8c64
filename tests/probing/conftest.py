"""Fixtures for the probing tests."""

from __future__ import annotations

import pytest

from monitord.config import ProbeSettings, parse_config


@pytest.fixture
def probes() -> ProbeSettings:
    """The built-in [probes] settings: a 60 s interval, down after 3 failed rounds."""
    return parse_config({}, "test", env={}).probes
