"""The [alerts] keys that decide which catalogue contacts are alerted, and how."""

from __future__ import annotations

from pathlib import Path

import pytest

from alerts.routing import contact_channels
from monitord.cli import main
from monitord.config import check_daemon_secrets, parse_config
from monitord.errors import ConfigError
from monitord.store.models import Service


@pytest.mark.parametrize(
    ("alerts", "message"),
    [
        (
            {"contact_allow": ["json://hooks.example.cn/path"]},
            'alerts.contact_allow[0] = "json://hooks.example.cn/path": expected a scheme and '
            "host such as mailto://*, mailto://example.gov.cn, mailto://*.example.gov.cn or "
            "json://hooks.example.gov.cn",
        ),
        (
            {"contact_allow": ["mailtos://example.cn"]},
            'alerts.contact_allow[0] = "mailtos://example.cn": expected mailto://… for e-mail '
            "addresses (they are sent through alerts.smtp_url)",
        ),
        (
            {"smtp_url": "json://smtp.example.cn"},
            'alerts.smtp_url = "json://smtp.example.cn": expected a mailto:// or mailtos:// URL '
            "of the SMTP server, such as mailtos://monitord:{smtp_password}@smtp.example.gov.cn"
            "?from=monitord@example.gov.cn",
        ),
    ],
)
def test_a_bad_contact_setting_is_refused_with_one_line(
    alerts: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config({"alerts": alerts}, "site.toml", env={})
    assert str(refused.value) == f"site.toml: {message}"


def test_an_smtp_url_that_needs_the_password_stops_the_daemon_without_one() -> None:
    url = "mailtos://monitord:{smtp_password}@smtp.example.cn?from=monitord@example.cn"
    settings = parse_config({"alerts": {"smtp_url": url}}, "site.toml", env={})
    with pytest.raises(ConfigError, match=r"^site.toml: alerts.smtp_url uses \{smtp_password\}"):
        check_daemon_secrets(settings)
    env = {"MONITORD_SMTP_PASSWORD": "x"}
    check_daemon_secrets(parse_config({"alerts": {"smtp_url": url}}, "site.toml", env=env))


@pytest.mark.parametrize(
    ("allow", "url", "alerted"),
    [
        (["mailto://example.gov.cn"], "mailto:ops@Example.gov.cn", True),
        (["mailto://*.example.gov.cn"], "mailto://ops@mail.example.gov.cn", True),
        (["mailto://*.example.gov.cn"], "mailto://ops@evilexample.gov.cn", False),
        (["json://hooks.example.gov.cn"], "json://hooks.example.gov.cn.evil.cn/x", False),
        (["json://hooks.example.gov.cn"], "jsons://hooks.example.gov.cn/x", False),
        (["dingtalk://*"], "dingtalk://TOKEN123/", True),
        (["mailto://*"], "mailto://ops@example.cn,boss@example.cn", False),
        (["mailto://*"], "mailto://{smtp_password}@evil.cn", False),
        (["mailto://*"], "mailto://ops@example.cn?bcc=all@example.cn", False),
    ],
)
def test_a_catalogue_contact_is_alerted_only_by_an_allowed_scheme_and_host(
    allow: list[str], url: str, alerted: bool
) -> None:
    smtp = "mailtos://monitord:{smtp_password}@smtp.example.cn?from=monitord@example.cn"
    alerts = parse_config(
        {"alerts": {"contact_allow": allow, "smtp_url": smtp}}, "site.toml", env={}
    ).alerts
    service = Service(id="svc-0042", contacts=[{"name": "x", "role": "owner", "apprise": url}])
    channels, refused = contact_channels(alerts, service)
    assert (len(channels), len(refused)) == ((1, 0) if alerted else (0, 1))


USABLE = (
    "expected an apprise URL it can use: a known scheme (dingtalk, wecombot, feishu, mailtos, "
    "json…) with the token or host it needs, such as dingtalk://<token>/"
)


@pytest.mark.parametrize(
    ("key", "url", "shown"),
    [
        ("oncall", "bogus://SECRETKEY999@host", "bogus://***@host"),
        ("oncall", "wecombot://", "wecombot://"),
        ("management", "dingtlak://" + "0123456789abcdef" * 4, "dingtlak://***"),
    ],
)
def test_an_alert_url_apprise_cannot_use_is_refused_at_load_without_its_secret(
    key: str, url: str, shown: str
) -> None:
    # check-config said OK; the typo surfaced as a failure (or a traceback) at every delivery.
    with pytest.raises(ConfigError) as refused:
        parse_config({"alerts": {key: [url]}}, "site.toml", env={})
    assert str(refused.value) == f'site.toml: alerts.{key}[0] = "{shown}": {USABLE}'


def test_an_smtp_url_with_its_password_placeholder_is_a_usable_alert_url() -> None:
    url = "mailtos://monitord:{smtp_password}@smtp.example.cn?from=monitord@example.cn"
    assert parse_config({"alerts": {"management": [url]}}, "site.toml", env={}).alerts.management


def test_check_config_says_an_unusable_alert_url_once_and_masked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # apprise also logged "ERROR Unparseable URL dingtlak://…" before monitord's own line.
    token = "0123456789abcdef" * 4
    config = tmp_path / "monitord.toml"
    config.write_text(f'[alerts]\noncall = ["dingtlak://{token}"]\n', encoding="utf-8")
    assert main(["--config", str(config), "check-config"]) == 2
    said = capsys.readouterr()
    assert said.out == ""
    assert said.err.count("\n") == 1 and token not in said.err
    assert 'alerts.oncall[0] = "dingtlak://***"' in said.err
