"""An analyzer set up from `[logs]` of the config: calendar, service pattern and the rules.

Kept apart from follow mode (`monitord.logwork`), which needs the store, so that `monitord
analyse` loads no more than analysis needs.
"""

from __future__ import annotations

from typing import Any

from monitord.accesslog.analysis import Analyzer
from monitord.config import LogSettings
from rules.log_rules import LogRuleEngine
from rules.workdays import WorkCalendar


def make_analyzer(settings: LogSettings, state: dict[str, Any] | None = None) -> Analyzer:
    """An analyzer with the configured calendar and service pattern, resumed from state."""
    calendar = WorkCalendar.from_config(
        settings.holidays, settings.workdays, settings.work_day_start, settings.work_day_end
    )
    engine = LogRuleEngine.load(calendar=calendar)
    options: dict[str, Any] = {}
    if settings.service_pattern:
        options["service_pattern"] = settings.service_pattern
    if state:
        return Analyzer.from_state(state, engine, **options)
    return Analyzer(engine, **options)
