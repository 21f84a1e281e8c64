"""Access-log analysis (clauses 6.4 c, 7.1, 7.3.1, 8.3 c): readers, statistics, rule findings.

Public surface:

* `analyse(paths_or_streams, fmt="auto", since=None, until=None, progress=None)` →
  `AnalysisResult` (`.to_json()` is what `monitord analyse --json` prints);
* `Analyzer` for follow mode: `feed(bytes) -> consumed`, `findings()`, `take_closed_stats()`,
  `to_state()` / `Analyzer.from_state(state)`;
* `LogFinding`, which converts to the core's `FindingDraft` with `to_draft()`.

The rules themselves live in `rules/logs.toml` and run in `rules.log_rules.LogRuleEngine`.
"""

from monitord.accesslog.analysis import FORMATS, AnalysisResult, Analyzer, Format, analyse
from monitord.accesslog.findings import LogFinding
from monitord.accesslog.schema import SCHEMA

__all__ = ["FORMATS", "SCHEMA", "AnalysisResult", "Analyzer", "Format", "LogFinding", "analyse"]
