"""An analyzer set up from `[logs]` of the config: calendar, service pattern, trusted proxies
and the rules.

Kept apart from follow mode (`monitord.accesslog.work`), which needs the store, so that `monitord
analyse` loads no more than analysis needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import rules
from monitord.accesslog.analysis import Analyzer

if TYPE_CHECKING:
    from monitord.config import LogSettings


def make_analyzer(settings: LogSettings | None, state: dict[str, Any] | None = None) -> Analyzer:
    """An analyzer with the configured calendar, service pattern and trusted proxies (None: the
    built-in `[logs]`), resumed from state."""
    engine = rules.log_rule_engine(settings)
    options: dict[str, Any] = {}
    if settings is not None and settings.service_pattern:
        options["service_pattern"] = settings.service_pattern
    if settings is not None:
        options["trusted_proxies"] = tuple(settings.trusted_proxies)
    if state:
        return Analyzer.from_state(state, engine, **options)
    return Analyzer(engine, **options)
