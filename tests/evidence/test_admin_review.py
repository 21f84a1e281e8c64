"""The quarterly admin-rights review (clause 7.3.2): `monitord review admins --file accounts.csv`
flags dormant admins, vendor accounts without an end date (or past it), and grants outside the
7.1.2 chain; a bad file is named by line and column, and nothing is recorded."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import pytest
from sqlalchemy import select

from monitord.cli import main
from monitord.errors import UsageError
from monitord.evidence import review_admins, reviews_in
from monitord.store import Store, open_store
from monitord.store.models import AdminReview, AuditEntry
from monitord.timeutil import UTC, quarter_bounds
from tests.conftest import FakeClock

HEADER = "account,role,vendor,last_login,granted_by,end_date\n"
BOSS = "boss,法人,,2026-11-01,,\n"
# The fake clock's review: Monday 2026-11-02 09:00 in Shanghai.


def flags_of(store: Store, tmp_path: Path, clock: FakeClock, lines: str) -> set[tuple[str, str]]:
    path = tmp_path / "accounts.csv"
    path.write_text(HEADER + BOSS + lines, encoding="utf-8")
    with store.session() as session:
        review = review_admins(
            session, path, quarter="2026q4", reviewed_by="李四", now=clock(), dormant_days=90
        )
        return {(f["account"], f["problem"]) for f in review.flags}


@pytest.mark.parametrize(
    ("vendor", "detail"),
    [
        # 无 (a Chinese export's "none") counted as a vendor named 无.
        *((no, None) for no in ("", "无", "否", "none", "No", "false", "0")),
        # yes/1/true were shown as the vendor's name: 第三方人员账号（yes）.
        *((yes, "第三方人员账号未设置到期日") for yes in ("yes", "是", "TRUE", "1")),
        ("某科技公司", "第三方人员账号（某科技公司）未设置到期日"),
    ],
)
def test_the_vendor_column_says_whether_and_whose(
    store: Store, tmp_path: Path, clock: FakeClock, vendor: str, detail: str | None
) -> None:
    path = tmp_path / "accounts.csv"
    path.write_text(HEADER + BOSS + f"v1,handler,{vendor},2026-11-01,boss,\n", encoding="utf-8")
    with store.session() as session:
        review = review_admins(
            session, path, quarter="2026q4", reviewed_by="李四", now=clock(), dormant_days=90
        )
        details = [f["detail"] for f in review.flags if f["account"] == "v1"]
    assert details == ([] if detail is None else [detail])


@pytest.mark.parametrize(
    ("lines", "flags"),
    [
        # Dormant: 90 days without a login before the review; 89 is still active.
        ("a1,管理员,,2026-08-04T09:00+08:00,boss,\n", {("a1", "dormant_admin")}),
        ("a1,管理员,,2026-08-05T09:00+08:00,boss,\n", set()),
        ("a1,admin,,,boss,\n", {("a1", "dormant_admin")}),  # never logged in
        ("h1,办事人,,,boss,\n", set()),  # a handler is not an admin
        # Vendors: an end date is required, and one passed is flagged while still listed.
        ("v1,办事人,某科技公司,2026-11-01,boss,\n", {("v1", "vendor_without_end_date")}),
        ("v1,handler,yes,2026-11-01,boss,2026-12-31\n", set()),
        ("v1,handler,是,2026-11-01,boss,2026-11-01\n", {("v1", "expired_account")}),
        ("s1,handler,否,2026-11-01,boss,\n", set()),
        # The 7.1.2 chain: the legal representative grants admins and handlers; an admin
        # grants handlers only; a handler grants nothing; the grantor is in the file.
        ("a1,admin,,2026-11-01,boss,\nh1,handler,,2026-11-01,a1,\n", set()),
        (
            "a1,admin,,2026-11-01,boss,\na2,admin,,2026-11-01,a1,\n",
            {("a2", "grant_outside_chain")},
        ),
        (
            "h1,handler,,2026-11-01,boss,\nh2,handler,,2026-11-01,h1,\n",
            {("h2", "grant_outside_chain")},
        ),
        ("h1,handler,,2026-11-01,former-admin,\n", {("h1", "grant_outside_chain")}),
        ("h1,handler,,2026-11-01,,\n", {("h1", "grant_outside_chain")}),
        # The platform's own admin accounts, under the platform's role names: no 7.1.2 chain
        # (its first account has no grantor), but dormant accounts and grants by an account
        # no longer listed are flagged.
        (
            "root,超级管理员,,2026-11-01,,\nops,系统管理员,,2026-11-01,root,\n"
            "aud,安全审计员,,2026-11-01,root,\n",
            set(),
        ),
        (
            "ops,系统管理员,,2026-08-04,root,\nroot,超级管理员,,2026-11-01,,\n",
            {("ops", "dormant_admin")},
        ),
        ("ops,系统管理员,,2026-11-01,former-root,\n", {("ops", "grant_outside_chain")}),
        (
            "h1,handler,,2026-11-01,root,\nroot,超级管理员,,2026-11-01,,\n",
            {("h1", "grant_outside_chain")},
        ),
    ],
    ids=[
        "dormant-90-days",
        "active-89-days",
        "never-logged-in",
        "handler-not-dormant",
        "vendor-no-end",
        "vendor-with-end",
        "vendor-expired",
        "own-staff",
        "chain-ok",
        "admin-grants-admin",
        "handler-grants",
        "grantor-not-listed",
        "no-grantor",
        "platform-roles",
        "platform-dormant",
        "platform-grantor-not-listed",
        "platform-role-grants-a-7.1.2-role",
    ],
)
def test_the_review_flags_what_clauses_7_1_2_and_7_3_2_ask_about(
    sqlite_store: Store,
    tmp_path: Path,
    clock: FakeClock,
    lines: str,
    flags: set[tuple[str, str]],
) -> None:
    assert flags_of(sqlite_store, tmp_path, clock, lines) == flags


def test_the_cli_records_the_review_and_prints_its_flags(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    accounts = tmp_path / "accounts.csv"
    # Exported from a spreadsheet: a byte order mark, Chinese and English roles, CRLF.
    accounts.write_bytes(
        (
            "\ufeff"
            + HEADER
            + "boss,法人,,2026-11-01,,\n"
            + "adm,legal_representative,,,,\n"
            + "a1,管理员,,2020-01-01,boss,\n"
            + "v1,办事人,某科技公司,2026-11-01,a1,\n"
        )
        .replace("\n", "\r\n")
        .encode()
    )
    argv = ["--config", str(config), "review", "admins", "--file", str(accounts)]
    assert main([*argv, "--quarter", "2026q3", "--by", "李四"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "admin review 1 of 2026q3: 4 account(s), 2 flag(s)"
    assert out[1].split()[:3] == ["ACCOUNT", "PROBLEM", "问题"]
    assert out[2].split()[:3] == ["a1", "dormant_admin", "长期未登录的管理员账号"]
    assert out[3].split()[:3] == ["v1", "vendor_without_end_date", "第三方人员账号未设置到期日"]

    store = open_store(f"sqlite:///{tmp_path / 'm.db'}")
    with store.session() as session:
        [review] = session.scalars(select(AdminReview)).all()
        assert review.quarter == "2026q3"
        assert review.reviewed_by == "李四"
        assert review.file_name == "accounts.csv"
        assert review.sha256 == hashlib.sha256(accounts.read_bytes()).hexdigest()
        assert [a["account"] for a in review.accounts] == ["boss", "adm", "a1", "v1"]
        assert [a["role"] for a in review.accounts] == [
            "legal_representative",
            "legal_representative",
            "admin",
            "handler",
        ]
        assert [f["problem"] for f in review.flags] == ["dormant_admin", "vendor_without_end_date"]
        [entry] = session.scalars(select(AuditEntry).where(AuditEntry.action == "review.admins"))
        assert (entry.actor, entry.subject) == ("李四", "admin review 1")
    store.dispose()


def test_the_dormant_threshold_is_the_config_s(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The command reviews as of today: an admin last seen 40 days ago.
    seen = (dt.date.today() - dt.timedelta(days=40)).isoformat()
    accounts = tmp_path / "accounts.csv"
    accounts.write_text(HEADER + BOSS + f"a1,admin,,{seen},boss,\n", encoding="utf-8")
    review = ["--config", str(config), "review", "admins", "--file", str(accounts)]
    assert main(review) == 0
    assert "2 account(s), 0 flag(s)" in capsys.readouterr().out
    config.write_text(config.read_text() + "\n[review]\ndormant_days = 30\n")
    assert main(review) == 0
    assert "2 account(s), 1 flag(s)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "accounts.csv: empty file; expected a header line: account,role,vendor,"),
        (HEADER.encode(), "accounts.csv: no accounts after the header line"),
        (
            b"account,role,vendor,last_login,granted_by\nboss,legal_representative,,,\n",
            "accounts.csv: line 1: the header lacks column(s) end_date; expected account,role,",
        ),
        (
            (HEADER + BOSS + "x, ,,,boss,\n").encode(),
            "accounts.csv: line 3, column role: '': expected a role: 法人, 管理员, 办事人 or "
            "the platform's name for it",
        ),
        (
            (HEADER + BOSS + "x,admin,,last week,boss,\n").encode(),
            "accounts.csv: line 3, column last_login: 'last week': expected a date or ISO 8601 "
            "time, or empty for never",
        ),
        (
            (HEADER + BOSS + "x,admin,,,boss,31/12/2026\n").encode(),
            "accounts.csv: line 3, column end_date: '31/12/2026': expected a date such as ",
        ),
        (
            (HEADER + BOSS + ",admin,,,boss,\n").encode(),
            "accounts.csv: line 3, column account: '': expected an account name",
        ),
        (
            (HEADER + BOSS + "boss,admin,,,boss,\n").encode(),
            "accounts.csv: line 3, column account: 'boss' is listed again (first on line 2)",
        ),
        (
            (HEADER + BOSS + "x,admin,,,boss,,surplus\n").encode(),
            "accounts.csv: line 3: more values than the header has columns",
        ),
        (
            (HEADER + BOSS).encode() + "x,管理员,,,boss,\n".encode("gbk"),
            "accounts.csv: line 3: not UTF-8 text, though the text before it is UTF-8 Chinese",
        ),
    ],
    ids=[
        "empty",
        "header-only",
        "missing-column",
        "role",
        "last-login",
        "end-date",
        "no-account",
        "twice",
        "surplus",
        "gbk",
    ],
)
def test_a_bad_file_is_named_by_line_and_column_and_no_review_is_recorded(
    tmp_path: Path,
    config: Path,
    capsys: pytest.CaptureFixture[str],
    content: bytes,
    message: str,
) -> None:
    accounts = tmp_path / "accounts.csv"
    accounts.write_bytes(content)
    assert main(["--config", str(config), "review", "admins", "--file", str(accounts)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("monitord: " + message)
    assert err.count("\n") == 1
    store = open_store(f"sqlite:///{tmp_path / 'm.db'}")
    with store.session() as session:
        assert session.scalars(select(AdminReview)).all() == []
    store.dispose()


@pytest.mark.parametrize(
    ("quarter", "message"),
    [
        ("2026Q5", "--quarter: '2026Q5' is not a quarter such as 2026q3"),
        ("2026q4", "--quarter: '2026q4' has not begun: it starts 2026-10-01 00:00 Asia/Shanghai"),
    ],
)
def test_a_quarter_that_is_not_one_or_has_not_begun_is_refused(
    sqlite_store: Store, tmp_path: Path, quarter: str, message: str
) -> None:
    accounts = tmp_path / "accounts.csv"
    accounts.write_text(HEADER + BOSS, encoding="utf-8")
    with sqlite_store.session() as session, pytest.raises(UsageError) as caught:
        review_admins(
            session,
            accounts,
            quarter=quarter,
            reviewed_by="李四",
            now=dt.datetime(2026, 9, 30, tzinfo=UTC),
            dormant_days=90,
        )
    assert str(caught.value) == message


def test_a_review_counts_for_the_quarter_it_was_made_for(
    store: Store, tmp_path: Path, clock: FakeClock
) -> None:
    accounts = tmp_path / "accounts.csv"
    accounts.write_text(HEADER + BOSS, encoding="utf-8")
    clock.now = dt.datetime(2026, 10, 2, 2, 0, tzinfo=UTC)  # 2 October, Shanghai
    with store.session() as session:
        for quarter in ("2026q2", "2026q3", "2026q4"):
            review_admins(
                session, accounts, quarter=quarter, reviewed_by="李四", now=clock(), dormant_days=90
            )
    with store.session() as session:
        assert [r.quarter for r in reviews_in(session, *quarter_bounds("2026q3"))] == ["2026q3"]
        assert [r.quarter for r in reviews_in(session, *quarter_bounds("2026q4"))] == ["2026q4"]
        year = quarter_bounds("2026q1")[0], quarter_bounds("2026q4")[1]
        assert [r.quarter for r in reviews_in(session, *year)] == ["2026q2", "2026q3", "2026q4"]


def test_each_flag_is_a_compliance_finding_until_a_review_no_longer_flags_it(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    accounts = tmp_path / "accounts.csv"
    review = ["--config", str(config), "review", "admins", "--file", str(accounts)]
    accounts.write_text(
        HEADER + BOSS + "a1,admin,,2020-01-01,boss,\nv1,handler,某科技公司,,a1,\n",
        encoding="utf-8",
    )
    assert main(review) == 0
    capsys.readouterr()
    assert main(["--config", str(config), "findings", "--json"]) == 0
    findings = json.loads(capsys.readouterr().out)
    assert sorted((f["rule"], f["clause"], f["subject"], f["state"]) for f in findings) == [
        ("admin_review:dormant_admin", "7.3.2", "a1", "open"),
        ("admin_review:vendor_without_end_date", "7.3.2", "v1", "open"),
    ]
    assert all(f["summary"].startswith("管理员权限审查（") for f in findings)

    # The next review: a1 has logged in since, v1 got an end date, a new admin is dormant.
    accounts.write_text(
        HEADER
        + BOSS
        + f"a1,admin,,{dt.date.today().isoformat()},boss,\nv1,handler,某科技公司,,a1,2099-12-31\n"
        + "a2,admin,,,boss,\n",
        encoding="utf-8",
    )
    assert main(review) == 0
    capsys.readouterr()
    assert main(["--config", str(config), "findings", "--all", "--json"]) == 0
    findings = json.loads(capsys.readouterr().out)
    assert sorted((f["rule"], f["subject"], f["state"]) for f in findings) == [
        ("admin_review:dormant_admin", "a1", "resolved"),
        ("admin_review:dormant_admin", "a2", "open"),
        ("admin_review:vendor_without_end_date", "v1", "resolved"),
    ]


def test_a_gb18030_file_whose_first_chinese_reads_as_utf8_is_read(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GB18030's 某某 (C4 B3 C4 B3) is valid two-byte UTF-8: the vendor comes before 法人.
    accounts = tmp_path / "accounts.csv"
    vendor = "v1,admin,某某科技,2026-11-01,boss,2026-12-31\n"
    accounts.write_bytes((HEADER + vendor + BOSS).encode("gb18030"))
    assert main(["--config", str(config), "review", "admins", "--file", str(accounts)]) == 0
    assert "2 account(s)" in capsys.readouterr().out
    store = open_store(f"sqlite:///{tmp_path / 'm.db'}")
    with store.session() as session:
        [review] = session.scalars(select(AdminReview)).all()
        assert [a["vendor"] for a in review.accounts] == ["某某科技", ""]
    store.dispose()


def test_a_review_resolves_only_its_own_accounts_population_and_quarters(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    platform = tmp_path / "platform.csv"
    platform.write_text(
        HEADER
        + "root,超级管理员,,2026-11-01,,\nops1,系统管理员,,2020-01-01,root,\n"
        + "ops2,系统管理员,,2020-01-01,root,\n",
        encoding="utf-8",
    )
    company = tmp_path / "company.csv"
    company.write_text(HEADER + BOSS + "li,管理员,,2026-11-01,boss,\n", encoding="utf-8")
    base = ["--config", str(config), "review", "admins"]

    def open_findings() -> set[str]:
        capsys.readouterr()
        assert main(["--config", str(config), "findings", "--json"]) == 0
        return {f["subject"] for f in json.loads(capsys.readouterr().out)}

    assert main([*base, "--file", str(platform), "--quarter", "2026q4"]) == 0
    assert open_findings() == {"ops1", "ops2"}
    # Another population's file, and a back-filled older quarter: nothing the platform's
    # review found is fixed by them.
    assert main([*base, "--file", str(company), "--quarter", "2026q4"]) == 0
    assert open_findings() == {"ops1", "ops2"}
    platform.write_text(HEADER + "root,超级管理员,,2026-11-01,,\n", encoding="utf-8")
    assert main([*base, "--file", str(platform), "--quarter", "2026q1"]) == 0
    assert open_findings() == {"ops1", "ops2"}
    # The same population's next review: an account it does not list is not "fixed"; one it
    # lists without the flag is.
    platform.write_text(
        HEADER + "root,超级管理员,,2026-11-01,,\nops1,系统管理员,,2026-11-01,root,\n",
        encoding="utf-8",
    )
    assert main([*base, "--file", str(platform), "--quarter", "2026q4"]) == 0
    assert open_findings() == {"ops2"}
