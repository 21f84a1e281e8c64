"""An analyzer set up from `[logs]` of the config: calendar, service pattern and the rules.

Kept apart from follow mode (`monitord.accesslog.work`), which needs the store, so that `monitord
analyse` loads no more than analysis needs.
"""

from __future__ import annotations

from typing import Any

import rules
from monitord.accesslog.analysis import Analyzer
from monitord.config import LogSettings


def make_analyzer(settings: LogSettings, state: dict[str, Any] | None = None) -> Analyzer:
    """An analyzer with the configured calendar and service pattern, resumed from state."""
    engine = rules.log_rule_engine(settings)
    options: dict[str, Any] = {}
    if settings.service_pattern:
        options["service_pattern"] = settings.service_pattern
    if state:
        return Analyzer.from_state(state, engine, **options)
    return Analyzer(engine, **options)
