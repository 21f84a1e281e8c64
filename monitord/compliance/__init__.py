"""The compliance stage: every rule of rules/compliance.toml judged per quarter over the stored
evidence (engine.py), and the clause 9.2 evaluation of each service (evaluation.py).

It reads the store and writes only its own verdicts (ComplianceResult rows, `store_verdicts`).
"""

from monitord.compliance.engine import evaluate_quarter, quarters_due, store_verdicts
from monitord.compliance.evaluation import FORMULA, score_services

__all__ = ["FORMULA", "evaluate_quarter", "quarters_due", "score_services", "store_verdicts"]
