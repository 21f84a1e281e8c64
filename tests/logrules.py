"""The tests' wiring of log analysis: the shipped rules handed in, as the runtime does."""

from __future__ import annotations

from typing import Any

import rules
from monitord.accesslog import analysis
from monitord.accesslog.analysis import AnalysisResult


def analyse(*args: Any, **options: Any) -> AnalysisResult:
    """`monitord.accesslog.analyse` with the shipped log rules (rules/logs.toml) unless the
    test hands in an engine of its own."""
    options.setdefault("engine", rules.log_rule_engine())
    return analysis.analyse(*args, **options)
