"""`monitord compliance` and `monitord evaluation`: the quarter's compliance verdicts per
clause, and the clause 9.2 ranking of the services."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from monitord.cli.common import add_wide, app_for, print_json, quarter_arg
from monitord.errors import UsageError
from monitord.textable import format_table, shortened
from monitord.timeutil import begun_quarter_bounds, quarter_start

if TYPE_CHECKING:
    from monitord.types import ComplianceVerdict, ServiceScore

FAILING_SHOWN = 8
"""At most this many failing services are named on a rule's line of the table."""


def _quarter(args: argparse.Namespace, now: Any) -> str:
    """--quarter, checked; the current quarter when not given."""
    if args.quarter is None:
        return quarter_start(now)[0]
    try:
        begun_quarter_bounds(args.quarter, now)
    except ValueError as exc:
        raise UsageError(f"--quarter: {exc}") from None
    return str(args.quarter)


def _judge(args: argparse.Namespace) -> tuple[str, list[ComplianceVerdict], list[ServiceScore]]:
    """Evaluate the quarter, store its verdicts, and (with --scores or for `evaluation`) score
    the services."""
    from monitord.compliance import evaluate_quarter, score_services, store_verdicts

    with app_for(args) as app, app.store.session() as session:
        now = app.clock()
        label = _quarter(args, now)
        verdicts = evaluate_quarter(session, app.settings, label, now)
        store_verdicts(session, label, verdicts, now)
        scores = (
            score_services(session, app.settings, label, verdicts, now)
            if getattr(args, "scores", True)
            else []
        )
    return label, verdicts, scores


def verdict_dict(verdict: ComplianceVerdict) -> dict[str, Any]:
    """A verdict as `--json` prints it."""
    return {
        "rule": verdict.rule,
        "clause": verdict.clause,
        "service_id": verdict.service_id,
        "quarter": verdict.quarter,
        "passed": verdict.passed,
        "pending": verdict.pending,
        "evidence": verdict.evidence,
    }


def verdict_table(verdicts: list[ComplianceVerdict]) -> str:
    """One line per rule: its clause, how many passed, failed and are pending (their duty not
    due yet, counted neither passed nor failed), and who failed."""
    by_rule: dict[tuple[str, str], list[ComplianceVerdict]] = {}
    for verdict in verdicts:
        by_rule.setdefault((verdict.rule, verdict.clause), []).append(verdict)
    rows = []
    for (rule, clause), mine in by_rule.items():
        judged = [v for v in mine if not v.pending]
        failing = [v.service_id or "(platform)" for v in judged if not v.passed]
        named = ", ".join(failing[:FAILING_SHOWN])
        if len(failing) > FAILING_SHOWN:
            named += f" and {len(failing) - FAILING_SHOWN} more"
        passed = sum(v.passed for v in judged)
        pending = len(mine) - len(judged)
        counts = [str(passed), str(len(failing)), str(pending)]
        rows.append([rule, clause, *counts, named or "-"])
    return format_table(["RULE", "CLAUSE", "PASSED", "FAILED", "PENDING", "FAILING"], rows, 60)


def score_table(scores: list[ServiceScore]) -> str:
    """The ranking, best first, with each part."""
    from monitord.config import EVALUATION_PARTS

    rows = [
        [
            str(s.rank or "-"),  # 0: not ranked (availability not measured)
            s.service_id,
            shortened(s.name, 24),
            s.tier,
            str(s.tier_rank or "-"),
            f"{s.score:.1f}",
            *(f"{s.parts[p]:.0f}" if p in s.parts else "-" for p in EVALUATION_PARTS),
        ]
        for s in scores
    ]
    headers = ["RANK", "SERVICE", "NAME", "TIER", "IN TIER", "SCORE"]
    return format_table([*headers, *(p.upper() for p in EVALUATION_PARTS)], rows)


def cmd_compliance(args: argparse.Namespace) -> int:
    """Evaluate the quarter's compliance rules, store the verdicts and show them."""
    label, verdicts, scores = _judge(args)
    if args.json:
        if args.scores:
            print_json([asdict(s) for s in scores])
        else:
            print_json([verdict_dict(v) for v in verdicts])
        return 0
    if args.scores:
        return _print_scores(label, scores)
    failed, pending = sum(not v.passed for v in verdicts), sum(v.pending for v in verdicts)
    print(f"compliance {label}: {len(verdicts)} verdicts, {failed} failed, {pending} pending")
    print(verdict_table(verdicts))
    return 0


def _print_scores(label: str, scores: list[ServiceScore]) -> int:
    from monitord.compliance import FORMULA

    if not scores:
        print(f"evaluation {label}: no service was online in the quarter")
        return 0
    print(f"evaluation {label}: {len(scores)} services (clause 9.2)")
    print(score_table(scores))
    print(FORMULA)
    return 0


def cmd_evaluation(args: argparse.Namespace) -> int:
    """Score and rank the services for the quarter (clause 9.2)."""
    label, _verdicts, scores = _judge(args)
    if args.json:
        print_json([asdict(s) for s in scores])
        return 0
    return _print_scores(label, scores)


def add_compliance_commands(sub: Any) -> None:
    """Register `compliance` and `evaluation`."""
    p = sub.add_parser(
        "compliance",
        help="evaluate the quarter's compliance rules, store and show the verdicts",
    )
    p.add_argument(
        "--quarter", type=quarter_arg, metavar="YYYYqN", help="default: the current quarter"
    )
    p.add_argument("--json", action="store_true", help="print a JSON list of verdicts")
    p.add_argument("--scores", action="store_true", help="show the clause 9.2 ranking instead")
    add_wide(p)
    p.set_defaults(handler=cmd_compliance)
    p = sub.add_parser("evaluation", help="the clause 9.2 score and ranking of every service")
    p.add_argument(
        "--quarter", type=quarter_arg, metavar="YYYYqN", help="default: the current quarter"
    )
    p.add_argument("--json", action="store_true", help="print a JSON list of scores")
    add_wide(p)
    p.set_defaults(handler=cmd_evaluation)
