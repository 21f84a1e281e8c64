"""The quarterly review of the platform's admin accounts and their rights (clause 7.3.2).

The operation unit exports the platform's accounts as CSV, UTF-8 with or without a byte order
mark (or GB18030, as Excel saves a plain CSV on a Chinese Windows), a header line naming the
columns (in any order; other columns are ignored):

    account     the account name (unique in the file)
    role        法人 or legal_representative, 管理员 or admin, 办事人 or handler (clause
                7.1.2's roles, when the file lists the portal's company accounts); any other
                name is a platform role as the platform names it (超级管理员, 系统管理员,
                安全审计员…), kept as written
    vendor      empty, no, false, 0 or 否 for the operation unit's own staff; otherwise the
                account is a third-party vendor's (yes, true, 1, 是, or the vendor's name)
    last_login  date or ISO 8601 time (Asia/Shanghai when it has no offset); empty: never
    granted_by  the account that granted its role; empty only for a legal representative
                or a platform role (the platform's first account has no grantor)
    end_date    the date the account's rights end; empty: none

The review flags, as findings of the review (not errors):

- dormant_admin: an admin, or an account of a platform role, with no login in
  `review.dormant_days` before the review;
- vendor_without_end_date: a vendor account with no end date (clause 8.3 c);
- expired_account: an account whose end date has passed, still listed;
- grant_outside_chain: a grant outside clause 7.1.2's chain, where the legal representative
  grants admins and handlers, an admin grants only handlers and a handler grants nothing; the
  grantor must be an account of the file. For a platform role only the last holds: rights
  granted by an account no longer listed are flagged.

Each flag is also a compliance finding (rule `admin_review:<problem>` of rules/core.toml, clause
7.3.2, no incident) about the account, resolved by the first later review that lists the account
and no longer flags it. A review speaks only for the accounts it lists, of the same population
(the platform's own roles, or the portal's company accounts of clause 7.1.2), and never over a
review of a later quarter: a company-accounts file, or a back-filled older quarter, leaves the
platform admins' findings as they are.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from monitord.errors import UsageError
from monitord.evidence.exported import exported_text
from monitord.files import read_bounded
from monitord.names import ADMIN_PROBLEM_NAMES
from monitord.store import audit
from monitord.store.bulk import among
from monitord.store.findings import resolve_finding, upsert_finding
from monitord.store.models import AdminReview, Finding
from monitord.textable import shortened, storable
from monitord.timeutil import SHANGHAI, begun_quarter_bounds, parse_time, quarter_bounds
from monitord.types import FindingDraft

MAX_ACCOUNTS_FILE_MB = 16
"""The largest accounts export `review admins` reads: a portal's admin accounts take kilobytes."""

COLUMNS = ("account", "role", "vendor", "last_login", "granted_by", "end_date")

ROLES = {
    "法人": "legal_representative",
    "legal_representative": "legal_representative",
    "管理员": "admin",
    "admin": "admin",
    "办事人": "handler",
    "handler": "handler",
}
"""The roles of clause 7.1.2, in Chinese or English, by the name monitord keeps."""

MAY_GRANT = {
    "legal_representative": {"admin", "handler"},
    "admin": {"handler"},
    "handler": set[str](),
}
"""Which roles each role may grant (clause 7.1.2)."""

PROBLEMS = ADMIN_PROBLEM_NAMES
"""What a review flags, with the Chinese names the report uses (one table, in monitord.names)."""

_NOT_VENDOR = {"", "无", "否", "none", "no", "n", "false", "0"}
"""The vendor column's values for the operation unit's own staff (无 is a Chinese export's
"none")."""
_VENDOR_UNNAMED = {"是", "yes", "y", "true", "1"}
"""The vendor column's values for a vendor's account whose vendor is not named."""
_ROLE_NAMES = {
    "legal_representative": "法人",
    "admin": "管理员",
    "handler": "办事人",
}


@dataclass(frozen=True)
class Account:
    """One line of the accounts file, as read."""

    account: str
    role: str
    vendor: str
    last_login: str | None
    granted_by: str
    end_date: str | None

    def is_vendor(self) -> bool:
        """Whether the account belongs to a third-party vendor's staff."""
        return self.vendor.strip().lower() not in _NOT_VENDOR

    def vendor_name(self) -> str | None:
        """The vendor's name as written; None when the column only says it is a vendor's
        account (yes, 是) or is not one."""
        value = self.vendor.strip()
        if not self.is_vendor() or value.lower() in _VENDOR_UNNAMED:
            return None
        return value


@dataclass(frozen=True)
class Flag:
    """Something the review found about one account."""

    account: str
    problem: str
    detail: str


def read_accounts(data: bytes, name: str) -> list[Account]:
    """The accounts of an export; UsageError naming the line and column of the first mistake."""
    text = exported_text(data, name)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [column.strip() for column in reader.fieldnames or []]
    if not header:
        raise UsageError(f"{name}: empty file; expected a header line: {','.join(COLUMNS)}")
    missing = [column for column in COLUMNS if column not in header]
    if missing:
        raise UsageError(
            f"{name}: line 1: the header lacks column(s) {', '.join(missing)}; "
            f"expected {','.join(COLUMNS)}"
        )
    reader.fieldnames = header
    accounts: list[Account] = []
    seen: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        account = _account(row, line, name)
        if account.account in seen:
            raise UsageError(
                f"{name}: line {line}, column account: {account.account!r} is listed again "
                f"(first on line {seen[account.account]})"
            )
        seen[account.account] = line
        accounts.append(account)
    if not accounts:
        raise UsageError(f"{name}: no accounts after the header line")
    return accounts


def _account(row: dict[str | Any, Any], line: int, name: str) -> Account:
    """One CSV row as an Account; UsageError naming the line and column when it is not one."""
    if None in row:
        raise UsageError(f"{name}: line {line}: more values than the header has columns")

    def cell(column: str) -> str:
        return storable(str(row.get(column) or "").strip())

    def bad(column: str, expected: str) -> UsageError:
        shown = shortened(cell(column), 60)
        return UsageError(f"{name}: line {line}, column {column}: {shown!r}: expected {expected}")

    if not cell("account"):
        raise bad("account", "an account name")
    role = ROLES.get(cell("role")) or ROLES.get(cell("role").lower()) or cell("role")
    if not role:
        raise bad("role", "a role: 法人, 管理员, 办事人 or the platform's name for it")
    last_login = cell("last_login") or None
    if last_login is not None:
        try:
            last_login = _login_time(last_login).isoformat()
        except ValueError:
            raise bad("last_login", "a date or ISO 8601 time, or empty for never") from None
    end_date = cell("end_date") or None
    if end_date is not None:
        try:
            end_date = dt.date.fromisoformat(end_date).isoformat()
        except ValueError:
            raise bad("end_date", "a date such as 2026-12-31, or empty for none") from None
    return Account(
        account=cell("account"),
        role=role,
        vendor=cell("vendor"),
        last_login=last_login,
        granted_by=cell("granted_by"),
        end_date=end_date,
    )


def _login_time(text: str) -> dt.datetime:
    """A last login: a date (its start, Asia/Shanghai) or an ISO 8601 time."""
    if len(text) == 10:
        return dt.datetime.combine(dt.date.fromisoformat(text), dt.time(), SHANGHAI)
    return parse_time(text)


def flags_of(accounts: list[Account], reviewed_at: dt.datetime, dormant_days: int) -> list[Flag]:
    """What the review finds in accounts at reviewed_at (see the module's docstring)."""
    by_name = {a.account: a for a in accounts}
    today = reviewed_at.astimezone(SHANGHAI).date()
    flags: list[Flag] = []
    for account in accounts:
        flags.extend(_dormant(account, reviewed_at, dormant_days))
        flags.extend(_ending(account, today))
        flags.extend(_grant(account, by_name))
    return flags


def _is_platform_role(role: str) -> bool:
    return role not in MAY_GRANT


def _dormant(account: Account, reviewed_at: dt.datetime, dormant_days: int) -> Iterator[Flag]:
    if account.role != "admin" and not _is_platform_role(account.role):
        return
    if account.last_login is None:
        yield Flag(account.account, "dormant_admin", "管理员账号从未登录")
        return
    idle = reviewed_at - dt.datetime.fromisoformat(account.last_login)
    if idle >= dt.timedelta(days=dormant_days):
        last = dt.datetime.fromisoformat(account.last_login).astimezone(SHANGHAI).date()
        yield Flag(
            account.account,
            "dormant_admin",
            f"管理员账号自 {last.isoformat()} 起 {idle.days} 天未登录（阈值 {dormant_days} 天）",
        )


def _ending(account: Account, today: dt.date) -> Iterator[Flag]:
    if account.end_date is None:
        if account.is_vendor():
            name = account.vendor_name()
            whose = f"第三方人员账号（{name}）" if name else "第三方人员账号"
            yield Flag(account.account, "vendor_without_end_date", f"{whose}未设置到期日")
        return
    if dt.date.fromisoformat(account.end_date) < today:
        yield Flag(
            account.account,
            "expired_account",
            f"账号已于 {account.end_date} 到期，仍在账号清单中",
        )


def _grant(account: Account, by_name: dict[str, Account]) -> Iterator[Flag]:
    if account.role == "legal_representative":
        return  # the identity system makes a legal representative, not another account
    if _is_platform_role(account.role):
        if account.granted_by and account.granted_by not in by_name:
            yield Flag(
                account.account,
                "grant_outside_chain",
                f"{account.role}由 {account.granted_by} 授权，但该账号不在清单中",
            )
        return
    role = _ROLE_NAMES[account.role]
    if not account.granted_by:
        yield Flag(account.account, "grant_outside_chain", f"{role}账号没有授权人")
        return
    grantor = by_name.get(account.granted_by)
    if grantor is None:
        yield Flag(
            account.account,
            "grant_outside_chain",
            f"{role}由 {account.granted_by} 授权，但该账号不在清单中",
        )
    elif account.role not in MAY_GRANT.get(grantor.role, ()):
        by = _ROLE_NAMES.get(grantor.role, grantor.role)
        yield Flag(
            account.account,
            "grant_outside_chain",
            f"{role}由{by} {grantor.account} 授权，{by}无权授予{role}",
        )


def review_admins(
    session: Session,
    path: Path,
    *,
    quarter: str,
    reviewed_by: str,
    now: dt.datetime,
    dormant_days: int,
) -> AdminReview:
    """Read an accounts export, record the review with what it flags, and audit it.

    Raises UsageError, before anything is written, when the file cannot be read or is over
    MAX_ACCOUNTS_FILE_MB (InputTooLarge), a line of it
    is not an account (naming the line and column), or the quarter is not YYYYqN or has not
    begun.
    """
    try:
        begun_quarter_bounds(quarter, now)
    except ValueError as exc:
        raise UsageError(f"--quarter: {exc}") from None
    try:
        data = read_bounded(path, MAX_ACCOUNTS_FILE_MB << 20, "an accounts export's limit")
    except OSError as exc:
        raise UsageError(f"--file {str(path)!r}: cannot be read ({exc.strerror})") from None
    accounts = read_accounts(data, path.name)
    flags = flags_of(accounts, now, dormant_days)
    review = AdminReview(
        quarter=quarter,
        reviewed_at=now,
        reviewed_by=storable(reviewed_by),
        file_name=storable(shortened(path.name, 255)),
        sha256=hashlib.sha256(data).hexdigest(),
        accounts=[asdict(a) for a in accounts],
        flags=[asdict(f) for f in flags],
    )
    session.add(review)
    session.flush()
    _findings(session, review.id, quarter, accounts, flags, now)
    audit(
        session,
        now,
        review.reviewed_by,
        "review.admins",
        f"admin review {review.id}",
        {"quarter": quarter, "accounts": len(accounts), "flags": len(flags)},
    )
    return review


def _findings(
    session: Session,
    review_id: int,
    quarter: str,
    accounts: list[Account],
    flags: list[Flag],
    now: dt.datetime,
) -> None:
    """A compliance finding per flag; an account this review lists and no longer flags has its
    finding of that problem resolved.

    A review speaks only for the accounts it lists, of their population (the platform's own
    accounts or the portal's company accounts), and not over a later quarter's review: a
    company-accounts file or a back-filled old quarter leaves the platform's findings alone.
    """
    population = {a.account: _population(a.role) for a in accounts}
    for flag in flags:
        existing = _finding_of(session, f"admin_review:{flag.problem}", flag.account)
        if existing is not None and _later_quarter(existing, quarter):
            continue  # a later quarter's review already speaks for this account
        upsert_finding(
            session,
            FindingDraft(
                rule=f"admin_review:{flag.problem}",
                clause="7.3.2",
                severity="medium",
                subject_kind="account",
                subject=flag.account,
                summary=f"管理员权限审查（{quarter}）：账号 {flag.account} {flag.detail}",
                evidence={
                    "review_id": review_id,
                    "quarter": quarter,
                    "problem": flag.problem,
                    "population": population[flag.account],
                },
            ),
            now,
        )
    flagged = {(f.account, f"admin_review:{f.problem}") for f in flags}
    for row in _unresolved_findings(session, set(population)):
        if (row.subject, row.rule) in flagged or _later_quarter(row, quarter):
            continue
        if _population_of_finding(session, row) == population[row.subject]:
            resolve_finding(session, row, now)


def _population(role: str) -> str:
    """Whose accounts a role is: the platform's own ("platform") or the portal's company
    accounts of clause 7.1.2 ("company")."""
    return "platform" if _is_platform_role(role) else "company"


def _finding_of(session: Session, rule: str, account: str) -> Finding | None:
    return session.scalars(
        select(Finding).where(
            Finding.rule == rule, Finding.subject_kind == "account", Finding.subject == account
        )
    ).one_or_none()


def _unresolved_findings(session: Session, accounts: set[str]) -> list[Finding]:
    """The review findings, open or accepted, about these accounts."""
    if not accounts:
        return []
    return list(
        session.scalars(
            select(Finding).where(
                Finding.rule.in_([f"admin_review:{problem}" for problem in PROBLEMS]),
                Finding.subject_kind == "account",
                Finding.state != "resolved",
                among(session, Finding.subject, sorted(accounts)),
            )
        )
    )


def _later_quarter(row: Finding, quarter: str) -> bool:
    """Whether a review finding was raised by a review of a quarter after `quarter`."""
    raised_in = row.evidence.get("quarter")
    if not isinstance(raised_in, str):
        return False
    try:
        return quarter_bounds(raised_in)[0] > quarter_bounds(quarter)[0]
    except ValueError:
        return False


def _population_of_finding(session: Session, row: Finding) -> str | None:
    """The population of the account a review finding is about: as recorded, or (a finding
    stored before it was recorded) by the account's role in the review that raised it."""
    recorded = row.evidence.get("population")
    if isinstance(recorded, str):
        return recorded
    review = session.get(AdminReview, row.evidence.get("review_id"))
    if review is None:
        return None
    for account in review.accounts:
        if account.get("account") == row.subject:
            return _population(str(account.get("role", "")))
    return None


def reviews_in(session: Session, start: dt.datetime, end: dt.datetime) -> list[AdminReview]:
    """The admin reviews recorded for the quarters that begin in [start, end), oldest first.

    A review belongs to the quarter it was recorded for (`--quarter`), not the day it was made:
    a review of 2026q3 finished on 2 October counts for 2026q3.
    """
    rows = session.scalars(select(AdminReview).order_by(AdminReview.reviewed_at, AdminReview.id))
    return [r for r in rows if start <= quarter_bounds(r.quarter)[0] < end]
