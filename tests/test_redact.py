"""What monitord shows of a URL or of provider-written text: never a secret, never a control."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError

from monitord.redact import (
    error_line,
    mask_secret,
    mask_url,
    mask_urls,
    mask_urls_within,
    one_line,
    printable,
)


@pytest.mark.parametrize(
    ("url", "shown", "secret"),
    [
        (
            "postgresql+psycopg://monitord:s3cret-pw@db.example:5432/monitord",
            "postgresql+psycopg://monitord:***@db.example:5432/monitord",
            "s3cret-pw",
        ),
        (
            "dingtalk://a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6/SECabc123def456ghi789",
            "dingtalk://***/***",
            "a1b2c3d4e5f6",
        ),
        ("wecombot://0123456789abcdef0123", "wecombot://***", "0123456789abcdef"),
        # A robot's key is its URL's host whatever it looks like: short, without digits.
        ("wecombot://ONCALLKEY", "wecombot://***", "ONCALLKEY"),
        ("dingtalk://MGMTTOKEN123", "dingtalk://***", "MGMTTOKEN123"),
        ("dingtalk://SECRET@MGMTTOKEN123/", "dingtalk://***/", "SECRET"),
        ("feishu://HOOKID/", "feishu://***/", "HOOKID"),
        (
            "json://hooks.example/x/abcdefghij123456?token=zzz&mode=1",
            "json://hooks.example/x/***?token=***&mode=1",
            "abcdefghij123456",
        ),
        (  # the placeholder monitord fills at send time is no secret: it shows the URL is right
            "mailto://ops:{smtp_password}@smtp.example.com?to=a@b.c",
            "mailto://ops:{smtp_password}@smtp.example.com?to=a@b.c",
            None,
        ),
        (
            "https://portal:tok3n@portal.example/api",
            "https://portal:***@portal.example/api",
            "tok3n",
        ),
        ("sqlite:////var/lib/monitord/x.db", "sqlite:////var/lib/monitord/x.db", None),
        (
            "sqlite:////tmp/pytest-67/test_a_store_on_a_mount0/m.db",
            "sqlite:////tmp/pytest-67/test_a_store_on_a_mount0/m.db",
            None,
        ),
        (
            "postgresql://monitord:s3cret-pw@db.example:99999/monitord",
            "postgresql://monitord:***@db.example:99999/monitord",
            "s3cret-pw",
        ),
        ("http://127.0.0.1:8300", "http://127.0.0.1:8300", None),
        # A URL with no secret is shown exactly as written: urlsplit and a rebuild showed
        # https://h?x as https://h?x= and https://H/ as https://h/, and dropped a fragment.
        ("https://h?x", "https://h?x", None),
        ("https://H/", "https://H/", None),
        ("https://S.Example/a%20b/?x&y=&z=1#top", "https://S.Example/a%20b/?x&y=&z=1#top", None),
        (
            "https://Svc.Example/?x&token=tok3n;v=2#access_token=abc123",
            "https://Svc.Example/?x&token=***#access_token=***",
            "tok3n",
        ),
        ("https://svc.example/?abcdef1234567890abcd", "https://svc.example/?***", "abcdef1234"),
    ],
)
def test_a_shown_url_keeps_where_it_goes_and_hides_its_secrets(
    url: str, shown: str, secret: str | None
) -> None:
    assert mask_url(url) == shown
    if secret is not None:
        assert secret not in mask_url(url)


@pytest.mark.parametrize(
    "password",
    [
        "ab/cdSecret",  # base64: urlsplit read the URL up to the / and showed the rest as a path
        "1234/Secret",  # ... and took 1234 for a port
        "p@ssW0rd",
        "a#b?c:dSecret",
        "x/y@Zk?q#Wd@Tail",
        "p%40ssSecret",
    ],
)
def test_a_password_holding_url_delimiters_is_masked_whole(password: str) -> None:
    url = f"postgresql://mon:{password}@127.0.0.1:55872/mon?sslmode=require"
    shown = "postgresql://mon:***@127.0.0.1:55872/mon?sslmode=require"
    assert mask_url(url) == shown
    assert mask_urls(f"cannot reach {url} (refused)") == f"cannot reach {shown} (refused)"


def test_an_at_in_a_query_value_is_not_taken_for_the_hosts() -> None:
    url = "mailtos://ops:s3cret@smtp.example.gov.cn/?to=a@example.gov.cn&cc=b@example.gov.cn"
    assert mask_url(url) == (
        "mailtos://ops:***@smtp.example.gov.cn/?to=a@example.gov.cn&cc=b@example.gov.cn"
    )


def test_a_secret_and_its_pieces_are_masked_in_a_drivers_words() -> None:
    said = "failed to resolve host 'ssW0rd@127.0.0.1'"
    assert mask_secret(said, "p@ssW0rd") == "failed to resolve host '***@127.0.0.1'"
    # Three characters or fewer are left: masking every "p" would hide the message.
    assert mask_secret("port 5432 pending", "p@5432") == "port *** pending"


def test_urls_inside_a_message_are_masked() -> None:
    text = "cannot reach postgresql://monitord:pw123@db/monitord (connection refused)"
    assert (
        mask_urls(text) == "cannot reach postgresql://monitord:***@db/monitord (connection refused)"
    )


def test_a_masked_url_in_parentheses_keeps_its_closing_parenthesis_when_masked_again() -> None:
    # The log patcher masks a message already masked: "(json://…?token=***)" lost its ")".
    text = "alert x delivered to alerts.oncall[0] (json://127.0.0.1:18801/oncall?token=abc)"
    shown = "alert x delivered to alerts.oncall[0] (json://127.0.0.1:18801/oncall?token=***)"
    assert mask_urls(text) == shown
    assert mask_urls(mask_urls(text)) == shown


def test_urls_at_any_depth_of_a_probes_facts_are_masked() -> None:
    facts = {
        "status": 302,
        "url": "https://u:pw@svc.test/entry",
        "redirects": [{"url": "https://svc.test/a?access_key=AKSECRET", "status": 302}],
    }
    assert mask_urls_within(facts) == {
        "status": 302,
        "url": "https://u:***@svc.test/entry",
        "redirects": [{"url": "https://svc.test/a?access_key=***", "status": 302}],
    }


def test_control_characters_become_visible_escapes() -> None:
    forged = "企业开办\x1b[2J\r2026-12-04 ERROR forged\u202e"
    assert printable(forged) == "企业开办\\x1b[2J\\r2026-12-04 ERROR forged\\u202e"
    assert one_line("a\nb\tc") == "a\\nb\\tc"


def test_a_database_error_is_its_own_first_line_without_the_sql_or_the_link(
    tmp_path: Path,
) -> None:
    # The access-log job's error carried SQLAlchemy's "[SQL: …]" and "\n(Background on this
    # error at: https://sqlalche.me/…)" into one log line.
    engine = create_engine(f"sqlite:///{tmp_path / 'full.db'}")
    with engine.begin() as connection:
        connection.exec_driver_sql("create table t (b blob)")
    with pytest.raises(OperationalError) as raised, engine.begin() as connection:
        connection.exec_driver_sql("pragma max_page_count = 2")  # a full disk, as SQLite sees it
        connection.exec_driver_sql("insert into t values (zeroblob(100000))")
    engine.dispose()
    assert error_line(raised.value) == "database or disk is full"
