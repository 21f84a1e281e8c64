"""Config: each bad value gives its one line and exit 2; the shipped file is the default."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from monitord.cli import main
from monitord.config import Settings, load_config, parse_config, secret_file_warnings
from monitord.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent.parent
INVALID = sorted((Path(__file__).parent / "configs" / "invalid").glob("*.toml"))


def expected_message(path: Path) -> str:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} must start with '# expect: '"
    return first.removeprefix("# expect: ")


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_config_is_refused_with_one_line(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["--config", str(path), "check-config"])
    err = capsys.readouterr().err
    assert status == 2
    assert err == f"monitord: {path}: {expected_message(path)}\n"


def test_a_secret_written_in_the_file_is_never_echoed(capsys: pytest.CaptureFixture[str]) -> None:
    main(
        [
            "--config",
            str(Path(__file__).parent / "configs/invalid/secret-in-file.toml"),
            "check-config",
        ]
    )
    assert "do-not-echo-this-token" not in capsys.readouterr().err


def test_the_process_exits_2_without_a_traceback() -> None:
    path = Path(__file__).parent / "configs" / "invalid" / "short-retention.toml"
    done = subprocess.run(
        [sys.executable, "-m", "monitord.cli", "--config", str(path), "check-config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1


def test_a_missing_config_file_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", "/nonexistent/monitord.toml", "check-config"]) == 2
    assert capsys.readouterr().err == (
        "monitord: /nonexistent/monitord.toml: cannot read the config file "
        "(No such file or directory)\n"
    )


def test_the_shipped_monitord_toml_is_valid_and_equals_the_built_in_defaults() -> None:
    shipped = load_config(ROOT / "monitord.toml", env={})
    assert shipped.model_dump() == Settings().model_dump()


def test_every_key_of_every_section_is_in_the_shipped_monitord_toml() -> None:
    # The README says every key is there with a comment; zap.max_concurrent_scans was not.
    text = (ROOT / "monitord.toml").read_text(encoding="utf-8")
    missing = []
    for name, field in Settings.model_fields.items():
        if name in ("secrets", "source"):  # resolved at load, not keys of the file
            continue
        section = re.search(rf"^\[{name}\]\n(.*?)(?=^\[[a-z_]+\]\n|\Z)", text, re.M | re.S)
        assert section is not None, f"[{name}] is not in monitord.toml"
        for key in field.annotation.model_fields:  # type: ignore[union-attr]
            # `key = …`, `# key = …` (an optional key), or its own table ([zap.auth_token_files]).
            shown = rf"^(# ?)?({key} =|\[+{name}\.{key}\]+$)"
            if not re.search(shown, section.group(1), re.M):
                missing.append(f"{name}.{key}")
    assert missing == []


def test_secrets_come_from_the_environment_or_a_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-a-file\n")
    config = tmp_path / "monitord.toml"
    config.write_text(f'[portal]\ntoken_file = "{token_file}"\n')
    env = {"MONITORD_ZAP_API_KEY": "zap-key-from-env", "MONITORD_PORTAL_TOKEN": "ignored"}
    settings = load_config(config, env=env)
    assert settings.secrets.portal_token is not None
    assert settings.secrets.portal_token.get_secret_value() == "from-a-file"
    assert settings.secrets.zap_api_key is not None
    assert settings.secrets.zap_api_key.get_secret_value() == "zap-key-from-env"
    assert "zap-key-from-env" not in repr(settings)
    assert "from-a-file" not in str(settings)


def test_secret_files_every_user_can_read_are_warned_of_not_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token, api_key, service_token = (tmp_path / n for n in ("token", "zap-key", "svc-0042"))
    for file, mode in ((token, 0o644), (api_key, 0o640), (service_token, 0o604)):
        file.write_text("secret\n")
        file.chmod(mode)
    config = tmp_path / "monitord.toml"
    config.write_text(
        f'[portal]\ntoken_file = "{token}"\n[zap]\napi_key_file = "{api_key}"\n'
        f'[zap.auth_token_files]\n"svc-0042" = "{service_token}"\n'
    )
    assert main(["--config", str(config), "check-config"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == f"config OK: {config}"
    assert captured.err.splitlines() == [
        f"warning: portal.token_file {token} can be read by every user of this machine (mode "
        "0644): chmod o-rwx it (600, or 640 for monitord's group)",
        f"warning: zap.auth_token_files.svc-0042 {service_token} can be read by every user of "
        "this machine (mode 0604): chmod o-rwx it (600, or 640 for monitord's group)",
    ]
    assert secret_file_warnings(load_config(config)) == [
        line.removeprefix("warning: ") for line in captured.err.splitlines()
    ]


def test_check_config_reads_the_file_named_by_monitord_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "site.toml"
    config.write_text('[portal]\nurl = "https://portal.example.gov.cn"\n')
    monkeypatch.setenv("MONITORD_CONFIG", str(config))
    assert main(["check-config"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"config OK: {config}"


def check(tmp_path: Path, text: str | bytes, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run `monitord check-config` on a file holding text; its status and stderr."""
    path = tmp_path / "site.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    status = main(["--config", str(path), "check-config"])
    return status, capsys.readouterr().err.replace(f"{path}: ", "site.toml: ")


def test_an_empty_log_file_means_no_json_log_at_start_and_reload_alike(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The daemon ran with no JSON log, while the reload check took "" for the working folder
    # ("cannot write it (it is a folder)") and every systemctl reload failed.
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "site.toml"
    config.write_text('[logging]\nfile = ""\n', encoding="utf-8")
    assert load_config(config, env={}).logging.file is None
    assert main(["--config", str(config), "check-config", "--for-reload"]) == 0
    assert capsys.readouterr() == (f"config OK: {config}\n", "")


def test_a_rate_per_minute_is_kept_by_lower_case_scheme_over_the_defaults(tmp_path: Path) -> None:
    # DingTalk = 20 never matched a channel (delivery looks the scheme up in lower case), and
    # { dingtalk = 10 } left WeCom's and Feishu's robots unpaced.
    config = tmp_path / "site.toml"
    config.write_text("[alerts]\nrate_per_minute = { DingTalk = 10 }\n", encoding="utf-8")
    rates = load_config(config, env={}).alerts.rate_per_minute
    assert rates == {"dingtalk": 10, "wecombot": 20, "feishu": 100}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[[alerts.routes]]\nkinds = ["vulnerabilty"]\nurls = ["json://hooks.example.gov.cn"]\n',
            "alerts.routes[0].kinds: 'vulnerabilty' is not an incident kind, expected one of "
            "vulnerability, abnormal_behaviour, insecure_transport, certificate_compromise, "
            "data_exposure, other, outage, degraded, certificate_expiry, compliance",
        ),
        (
            '[incidents.rule_kinds]\n"no_such_rule" = "outage"\n',
            "incidents: rule_kinds['no_such_rule'] matches no rule: expected a rule's name (or a "
            "glob) as rules/logs.toml, probes.toml or core.toml write it",
        ),
    ],
    ids=["route-kind", "rule-kinds-pattern"],
)
def test_a_misspelt_kind_or_rule_name_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    # Each was taken and then never matched anything: the route told nobody, the override
    # changed no rule's kind.
    assert check(tmp_path, text, capsys) == (2, f"monitord: site.toml: {message}\n")
    rules_text = '[incidents.rule_kinds]\n"error_*" = "outage"\n'
    assert check(tmp_path, rules_text, capsys) == (0, "")


def test_a_byte_order_mark_is_not_part_of_the_toml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = '[portal]\nurl = "https://portal.example.gov.cn"\n'
    status, err = check(tmp_path, b"\xef\xbb\xbf" + text.encode(), capsys)
    assert (status, err) == (0, "")
    settings = load_config(tmp_path / "site.toml", env={})
    assert settings.portal.url == "https://portal.example.gov.cn"


def test_a_working_day_time_with_an_offset_is_refused_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, err = check(tmp_path, '[logs]\nwork_day_start = "08:30+05:00"\n', capsys)
    assert status == 2
    assert err == (
        'monitord: site.toml: logs.work_day_start = "08:30+05:00": expected a time of day such '
        "as 08:30, without an offset (read as Asia/Shanghai)\n"
    )


def test_toml_dates_and_times_are_taken_as_written(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(
        "[logs]\nholidays = [2027-01-01]\nworkdays = [2027-02-07]\n"
        "work_day_start = 09:00:00\nwork_day_end = 17:30:00\n",
        encoding="utf-8",
    )
    logs = load_config(path, env={}).logs
    assert (logs.holidays, logs.workdays) == (["2027-01-01"], ["2027-02-07"])
    assert (logs.work_day_start, logs.work_day_end) == ("09:00:00", "17:30:00")


def test_a_maintenance_window_is_a_date_time_in_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    quoted = (
        '[[alerts.maintenance]]\nstart = "2026-12-05T22:00:00+08:00"\n'
        'end = "2026-12-06T02:00:00+08:00"\n'
    )
    assert check(tmp_path, quoted, capsys) == (0, "")
    day_only = "[[alerts.maintenance]]\nstart = 2026-12-05\nend = 2026-12-06T02:00:00\n"
    assert check(tmp_path, day_only, capsys) == (
        2,
        'monitord: site.toml: alerts.maintenance[0].start = "2026-12-05": expected a date-time '
        "with its time of day, such as 2026-12-05T22:00:00+08:00\n",
    )
    backwards = "[[alerts.maintenance]]\nstart = 2026-12-06T02:00:00\nend = 2026-12-05T22:00:00\n"
    assert check(tmp_path, backwards, capsys) == (
        2,
        "monitord: site.toml: alerts.maintenance[0]: end 2026-12-05T22:00:00+08:00 must be "
        "after start 2026-12-06T02:00:00+08:00\n",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[probes]\ninterval_seconds = inf\n",
            "probes.interval_seconds = Infinity: expected at most 86400",
        ),
        (
            "[portal]\nsync_interval_seconds = 900000000000\n",
            "portal.sync_interval_seconds = 900000000000: expected at most 86400",
        ),
        (
            "[store]\nretention_days = 1000000\n",
            "store.retention_days = 1000000: expected at most 3650",
        ),
        (
            "[incidents]\nnotify_within_minutes = 600\n",
            "incidents.notify_within_minutes = 600: expected at most 120 "
            "(clause 7.3.3: notified within two hours)",
        ),
        # Every service whose slot fell after the deadline was a 7.3.2 finding before its scan.
        (
            "[zap]\nquarterly_spread_days = 60\nquarterly_deadline_days = 1\n",
            "zap: quarterly_spread_days 60 must be less than quarterly_deadline_days 1 (every "
            "quarterly scan starts before the deadline)",
        ),
        (
            "[alerts]\nretry_seconds = 100.0\nretry_max_seconds = 10.0\n",
            "alerts: retry_max_seconds 10 must be at least retry_seconds 100",
        ),
    ],
)
def test_absurd_durations_are_refused_at_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    # Each of these passed the check and then overflowed the scheduler or the date arithmetic
    # of a running daemon, or broke the clause 7.3.3 clock without a word.
    assert check(tmp_path, text, capsys) == (2, f"monitord: site.toml: {message}\n")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[portal]\nurl = "http://portal:99999"\n',
            'portal.url = "http://portal:99999": expected an http:// or https:// URL whose port '
            "is a number up to 65535",
        ),
        (
            '[zap]\nurl = "http://127.0.0.1:zap"\n',
            'zap.url = "http://127.0.0.1:zap": expected an http:// or https:// URL whose port '
            "is a number up to 65535",
        ),
        (
            '[probes]\ncanaries = ["https://www.example.gov.cn /"]\n',
            'probes.canaries = ["https://www.example.gov.cn /"]: expected a URL without blanks '
            "(write a space in a path as %20)",
        ),
        (
            '[store]\nurl = "sqlite://"\n',
            'store.url = "sqlite://": expected a database file such as sqlite:///var/monitord.db',
        ),
        (
            '[store]\nurl = "sqlite:///:memory:"\n',
            'store.url = "sqlite:///:memory:": expected a database file such as '
            "sqlite:///var/monitord.db",
        ),
        (
            '[store]\nurl = "postgresql+psycopg2://monitord@db/monitord"\n',
            'store.url = "postgresql+psycopg2://monitord@db/monitord": expected a driver monitord '
            "installs: sqlite, sqlite+pysqlite, postgresql, postgresql+psycopg",
        ),
        (
            '[store]\nurl = "postgresql://monitord@db:pg/monitord"\n',
            'store.url = "postgresql://monitord@db:pg/monitord": expected a postgresql:// URL '
            "whose port is a number up to 65535",
        ),
    ],
)
def test_urls_that_fail_at_run_time_are_refused_at_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    # Each passed the check, then failed every probe or sync ("Port out of range"), kept the
    # store in memory (every row lost at exit), or stopped a command with a traceback.
    assert check(tmp_path, text, capsys) == (2, f"monitord: site.toml: {message}\n")


def test_a_robot_given_as_its_web_address_is_refused_with_its_own_scheme(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # apprise takes the address WeCom's admin page shows, but delivery knew it only by its
    # scheme: a message WeCom refused (errcode 40058) was counted as delivered, unsplit.
    web = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=693a0006-7a0c-4bc4-97a0-0ec2"
    status, err = check(tmp_path, f'[alerts]\nmanagement = ["{web}"]\n', capsys)
    assert (status, err) == (
        2,
        'monitord: site.toml: alerts.management[0] = "https://qyapi.weixin.qq.com/cgi-bin/'
        'webhook/send?key=***": expected the WeCom Bot address in its own scheme: write it as '
        "wecombot://<key>\n",
    )
    written = (
        '[alerts]\nmanagement = ["wecombot://693a0006", "WECOMBOT://693a0007"]\n'
        'oncall = ["mailtos://m:pw@smtp.example.gov.cn?to=a@example.gov.cn", "jsons://hooks.example.gov.cn"]\n'
    )
    assert check(tmp_path, written, capsys) == (0, "")


@pytest.mark.parametrize("password", ["ab/cdSecret", "p@ssW0rd", "1234/Secret"])
def test_a_store_password_with_a_bare_at_or_slash_is_refused_without_showing_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], password: str
) -> None:
    # urlsplit read "mon:ab" as the host and the error echoed the whole URL; a bare @ reached
    # the driver, whose error quoted the password's tail as the host it could not resolve.
    url = f"postgresql://mon:{password}@127.0.0.1:55872/mon"
    status, err = check(tmp_path, f'[store]\nurl = "{url}"\n', capsys)
    assert (status, err) == (
        2,
        'monitord: site.toml: store.url = "postgresql://mon:***@127.0.0.1:55872/mon": expected '
        "a postgresql:// URL whose password has each @ written as %40 and each / as %2F\n",
    )
    shown = {password[start : start + 4] for start in range(len(password) - 3)}
    assert not {piece for piece in shown if piece in err}


def test_the_store_urls_that_work_are_taken(tmp_path: Path) -> None:
    for url in (
        "sqlite:///var/m.db",
        "sqlite:////srv/m.db",
        "postgresql://m@db:5432/m",
        "postgresql://m:ab%2Fcd%40ef@db:5432/m",
        # SQLAlchemy reads a password with a bare # ? or : as written; urlsplit refused it.
        "postgresql://m:a#b?c:d@db:5432/m",
    ):
        path = tmp_path / "site.toml"
        path.write_text(f'[store]\nurl = "{url}"\n', encoding="utf-8")
        assert load_config(path, env={}).store.url == url


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        (b"\xff\xfe\x00k", "expected UTF-8 text"),
        (b"\n", "expected the secret in it (the file is empty)"),
        # Passed the check, then every request failed: "Forbidden control character in headers".
        (
            b"key-line-1\nkey-line-2\n",
            "expected the secret on one line, without control characters (the file holds more "
            "than one line, or a tab)",
        ),
    ],
)
def test_a_secret_file_that_holds_no_usable_secret_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], secret: bytes, message: str
) -> None:
    # Binary content was a UnicodeDecodeError traceback; an empty file silently sent no key.
    key_file = tmp_path / "zap-key"
    key_file.write_bytes(secret)
    status, err = check(tmp_path, f'[zap]\napi_key_file = "{key_file}"\n', capsys)
    assert (status, err) == (
        2,
        f'monitord: site.toml: zap.api_key_file = "{key_file}": {message}\n',
    )


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (b"", "expected the secret in it (the file is empty)"),
        (b"\xff\xfetoken\n", "expected UTF-8 text"),
        (
            b"abc\ndef\n",
            "expected the secret on one line, without control characters (the file holds more "
            "than one line, or a tab)",
        ),
    ],
    ids=["empty", "not-utf-8", "two-lines"],
)
def test_a_test_account_token_file_is_checked_as_every_secret_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], token: bytes, message: str
) -> None:
    # Each passed the check, then the service's scans ran without logging in, failed every
    # time with a traceback, or sent two lines as ZAP's Authorization header.
    token_file = tmp_path / "svc-1"
    token_file.write_bytes(token)
    token_file.chmod(0o600)
    text = f'[zap.auth_token_files]\n"svc-1" = "{token_file}"\n'
    assert check(tmp_path, text, capsys) == (
        2,
        f'monitord: site.toml: zap.auth_token_files.svc-1 = "{token_file}": {message}\n',
    )


def test_a_byte_order_mark_is_not_part_of_a_secret(tmp_path: Path) -> None:
    # Windows Notepad starts a file with one: the portal was sent "Bearer \ufeffsecrettoken".
    token_file = tmp_path / "portal-token"
    token_file.write_bytes(b"\xef\xbb\xbfsecrettoken\r\n")
    config = tmp_path / "site.toml"
    config.write_text(f'[portal]\ntoken_file = "{token_file}"\n', encoding="utf-8")
    token = load_config(config, env={}).secrets.portal_token
    assert token is not None and token.get_secret_value() == "secrettoken"


@pytest.mark.parametrize("huge", ["big-file", "/dev/zero"])
def test_a_secret_file_is_read_no_further_than_a_secret_takes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], huge: str
) -> None:
    # /dev/zero as a token file ate memory until a MemoryError traceback.
    token_file = tmp_path / huge
    if huge == "big-file":
        token_file.write_bytes(b"t" * (64 * 1024 + 1))
    else:
        token_file = Path(huge)
    status, err = check(tmp_path, f'[portal]\ntoken_file = "{token_file}"\n', capsys)
    assert (status, err) == (
        2,
        f'monitord: site.toml: portal.token_file = "{token_file}": expected a secret file of at '
        "most 64 KiB\n",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # "" fell back to $MONITORD_PORTAL_TOKEN without a word.
        ('[portal]\ntoken_file = ""\n', 'portal.token_file = "": expected a non-empty string'),
        ('[zap]\nscan_policy = ""\n', 'zap.scan_policy = "": expected a non-empty string'),
        (
            '[logs]\nfollow = [{ path = "" }]\n',
            'logs.follow[0].path = "": expected a non-empty string',
        ),
        # An escalation level or route without a channel told nobody.
        (
            '[[alerts.escalation]]\nname = "值班组长"\nurls = []\n',
            "alerts.escalation[0].urls = []: expected a non-empty list",
        ),
        (
            '[[alerts.routes]]\nkinds = ["outage"]\nurls = []\n',
            "alerts.routes[0].urls = []: expected a non-empty list",
        ),
        # A fraction where a percentage belongs let every service without a filed target pass
        # clause 6.4 a at any uptime; the same value filed is a filing problem.
        (
            "[compliance]\nuptime_percent = 0.999\n",
            "compliance.uptime_percent = 0.999: expected at least 90 (a percentage: 99.9, not the "
            "fraction 0.999)",
        ),
        # pydantic's own words, with its regular expression, were shown.
        (
            '[cluster]\nzone = "机房"\n',
            "cluster.zone = \"机房\": expected letters, digits, '.', '_' or '-', starting "
            "with a letter or digit, at most 63 characters",
        ),
        # A missing test-account token made that service's scans run without logging in.
        (
            '[zap.auth_token_files]\n"svc-0042" = "/nonexistent/token"\n',
            'zap.auth_token_files.svc-0042 = "/nonexistent/token": expected a readable file '
            "(No such file or directory)",
        ),
    ],
)
def test_empty_and_unusable_values_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    assert check(tmp_path, text, capsys) == (2, f"monitord: site.toml: {message}\n")


def test_a_typo_in_an_array_of_tables_lists_its_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = '[[alerts.escalation]]\nname = "值班组长"\nurl = ["dingtalk://t/"]\n'
    status, err = check(tmp_path, text, capsys)
    assert status == 2
    assert err.splitlines() == [
        "monitord: site.toml: alerts.escalation[0].urls: missing, expected a value",
        "monitord: site.toml: alerts.escalation[0].url: unknown key, expected one of name, urls",
    ]


def test_a_secret_like_key_monitord_does_not_read_names_no_made_up_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # It said "set MONITORD_PORTAL_PASSWORD ... or portal.password_file": neither exists.
    status, err = check(tmp_path, '[portal]\npassword = "do-not-echo"\n', capsys)
    assert status == 2
    assert err == (
        "monitord: site.toml: portal.password: unknown key (and secrets are not read from the "
        "config file), expected one of url, token_file, sync_interval_seconds, page_size, "
        "timeout_seconds, retries, backoff_seconds, max_gone_fraction, max_page_mb, max_field_kb\n"
    )


def test_a_ca_file_that_holds_no_certificate_is_refused_at_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # It passed the check, then every probe round failed with an ssl.SSLError traceback.
    bundle = tmp_path / "gov-ca.pem"
    bundle.write_text("not a certificate\n", encoding="utf-8")
    status, err = check(tmp_path, f'[probes]\nca_file = "{bundle}"\n', capsys)
    assert status == 2
    assert err == (
        f'monitord: site.toml: probes.ca_file = "{bundle}": expected a PEM file of CA '
        "certificates ([X509: NO_CERTIFICATE_OR_CRL_FOUND] no certificate or crl found)\n"
    )


@pytest.mark.parametrize(
    ("text", "message", "secret"),
    [
        (
            '[store]\nurl = "postgresql://monitord:hunter2@db:pg/monitord"\n',
            'store.url = "postgresql://monitord:***@db:pg/monitord": expected a postgresql:// URL '
            "whose port is a number up to 65535",
            "hunter2",
        ),
        (
            '[portal]\nurl = "https://monitord:tok3n-x@portal.example.gov.cn:99999/"\n',
            'portal.url = "https://monitord:***@portal.example.gov.cn:99999/": expected an '
            "http:// or https:// URL whose port is a number up to 65535",
            "tok3n-x",
        ),
        (
            '[alerts]\noncall = ["dingtalk://a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6/",'
            ' "0123456789abcdef0123456789abcdef"]\n',
            'alerts.oncall[1] = "***": expected apprise URLs such as dingtalk://<token>/ or '
            "mailto://user@host",
            "0123456789abcdef",
        ),
        (
            '[probes]\ncanaries = ["https://probe:pr0be-pw@www.example.gov.cn /"]\n',
            'probes.canaries = ["https://probe:***@www.example.gov.cn /"]: expected a URL '
            "without blanks (write a space in a path as %20)",
            "pr0be-pw",
        ),
    ],
    ids=["store-password", "portal-userinfo", "bare-apprise-token", "canary-userinfo"],
)
def test_a_refused_value_is_echoed_without_its_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str, secret: str
) -> None:
    # The store password, an apprise token and a portal's userinfo were echoed as written.
    status, err = check(tmp_path, text, capsys)
    assert (status, err) == (2, f"monitord: site.toml: {message}\n")
    assert secret not in err


def test_control_characters_in_a_refused_value_are_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, err = check(tmp_path, '[zap]\nscan_policy = 3\n"x\\u001b[2J\\u009b" = 1\n', capsys)
    assert status == 2
    assert "\x1b" not in err and "\x9b" not in err
    assert err.splitlines()[1].startswith("monitord: site.toml: zap.x\\x1b[2J\\x9b: unknown key")


def test_secrets_come_from_systemd_credentials_when_nothing_else_gives_them(
    tmp_path: Path,
) -> None:
    # Under systemd (LoadCredential=), the secrets are files only the service can read.
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "portal-token").write_text("from-credential\n", encoding="utf-8")
    (credentials / "smtp-password").write_text("", encoding="utf-8")
    env = {"CREDENTIALS_DIRECTORY": str(credentials)}
    settings = parse_config({}, "t", env={**env, "MONITORD_SMTP_PASSWORD": "from-env"})
    assert settings.secrets.portal_token is not None
    assert settings.secrets.portal_token.get_secret_value() == "from-credential"
    assert settings.secrets.zap_api_key is None
    # The environment still wins, and an empty credential is named like an empty file.
    assert settings.secrets.smtp_password is not None
    assert settings.secrets.smtp_password.get_secret_value() == "from-env"
    with pytest.raises(ConfigError) as refused:
        parse_config({}, "t", env=env)
    assert str(refused.value) == (
        "t: the systemd credential smtp-password: expected the secret in it (the file is empty)"
    )


def test_a_secret_from_the_environment_on_two_lines_is_refused_without_naming_a_file() -> None:
    # It said "the file holds more than one line" of a variable.
    with pytest.raises(ConfigError) as refused:
        parse_config({}, "site.toml", env={"MONITORD_PORTAL_TOKEN": "s3cr3t\nrest"})
    assert str(refused.value).endswith(
        "$MONITORD_PORTAL_TOKEN: expected the secret on one line, without control characters "
        "(it holds a line break, a tab or another)"
    )
    assert "s3cr3t" not in str(refused.value)


def test_check_config_with_credentials_reads_the_secrets_as_the_service_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The install's check said "config OK" while the service, handed the empty portal-token
    # install.sh creates, refused to start: the check never read the credentials.
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    token = credentials / "portal-token"
    token.write_text("", encoding="utf-8")
    config = tmp_path / "monitord.toml"
    config.write_text('[portal]\nurl = "https://portal.example.gov.cn"\n', encoding="utf-8")
    # A token in this shell is not one the service has.
    monkeypatch.setenv("MONITORD_PORTAL_TOKEN", "only-in-this-shell")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    check = ["--config", str(config), "check-config", "--credentials", str(credentials)]

    assert main(check) == 2
    assert capsys.readouterr().err == (
        f"monitord: {config}: the systemd credential portal-token: expected the secret "
        "in it (the file is empty)\n"
    )
    token.write_text("the-portal-token\n", encoding="utf-8")
    assert main(check) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"config OK: {config}"

    assert main(["--config", str(config), "check-config", "--credentials", "/nonexistent"]) == 2
    assert capsys.readouterr().err == (
        "monitord: --credentials /nonexistent: expected a folder this user can read (the "
        "credentials folder is root's: run check-config as root)\n"
    )
