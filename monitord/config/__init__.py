"""Configuration: one TOML file validated into one typed, immutable tree.

Every default lives in the models below; `monitord.toml` at the project root documents them (a
test keeps the two equal). Errors name the key, the value given and what was expected, on one
line. Secrets never come from the file: they are read from environment variables
(`MONITORD_<NAME>`) or from files the config names, and are held as `SecretStr`.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import ipaddress
import json
import logging
import os
import re
import socket
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from monitord.errors import ConfigError, InputTooLarge, UsageError
from monitord.files import read_bounded
from monitord.redact import MASK, mask_url, mask_urls, one_line, printable
from monitord.textable import written_text
from monitord.timeutil import SHANGHAI
from monitord.types import API_ROLES as API_ROLES
from monitord.types import (
    AVAILABILITY_KINDS,
    MAX_NAME,
    ONE_LINE_BREAKERS,
    PROBE_KINDS,
    QUIET_KINDS,
    SECURITY_KINDS,
    SEVERITIES,
    Severity,
)
from monitord.types import ApiRole as ApiRole

# Keys whose values must never be echoed back, even inside an error message.
SECRET_WORDS = ("token", "password", "secret", "api_key", "apikey")
# Where each secret comes from: its environment variable, or the file named by `<key>_file`.
SECRET_ENV = {
    ("portal", "token"): "MONITORD_PORTAL_TOKEN",
    ("zap", "api_key"): "MONITORD_ZAP_API_KEY",
    ("alerts", "smtp_password"): "MONITORD_SMTP_PASSWORD",
}
# Else a systemd credential of this name (LoadCredential= in deploy/monitord.service): a file
# in $CREDENTIALS_DIRECTORY that only the service can read, never in its environment.
SECRET_CREDENTIAL = {
    ("portal", "token"): "portal-token",
    ("zap", "api_key"): "zap-api-key",
    ("alerts", "smtp_password"): "smtp-password",
}
STORE_SCHEMES = ("sqlite", "sqlite+pysqlite", "postgresql", "postgresql+psycopg")
"""The store URL schemes whose drivers monitord installs (psycopg 3 for PostgreSQL)."""
MIN_RETENTION_DAYS = 184
"""Clause 7.3.1 keeps logs at least six months: six calendar months are 181 to 184 days, so
the shortest retention that always covers them is the longest, 184 (July to December)."""
# Upper bounds on durations. Past them a value is a slip (milliseconds for seconds, an extra
# zero), and far past them (1e12, inf) the scheduler and date arithmetic overflow at run time.
DAY = 86_400  # seconds
MAX_RETENTION_DAYS = 3650
NOTIFY_WITHIN_MINUTES = 120  # clause 7.3.3: notify the management unit within two hours
UPTIME_TARGET_PERCENT = (90.0, 100.0)
"""The uptime targets a filing (slo.uptime_percent) or [compliance] may set: a percentage, and a
sane one (0.999 is a fraction written where 99.9 was meant, and would let a service pass at any
uptime)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# A file name, a policy, a label: "" is a slip, never a way to say "none" (leave the key out).
NonEmpty = Annotated[str, StringConstraints(min_length=1)]


def http_url(value: str) -> str:
    """Check an http(s) URL and return it without its trailing slash.

    Raises ValueError saying what was expected: a host, a port in range, no blanks.
    """
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("an http:// or https:// URL with a host")
    if any(c.isspace() for c in value):
        raise ValueError("a URL without blanks (write a space in a path as %20)")
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when it is read
    except ValueError:
        raise ValueError("an http:// or https:// URL whose port is a number up to 65535") from None
    return value.rstrip("/")


class DaemonSettings(_Section):
    """How the daemon process behaves."""

    grace_seconds: float = Field(default=20.0, gt=0, le=3600)
    """On SIGTERM/SIGINT, how long running jobs may take to finish before they are cancelled
    (the probe round and the catalogue sync stop at once: runtime.jobs.Job.stops_at_once)."""
    watchdog: bool = True
    """Feed the systemd watchdog when systemd asks for it (WATCHDOG_USEC)."""


_STORE_USERINFO = re.compile(r"[^:/]*(?::(?P<password>[^@]*))?@")
"""A store URL's user:password@ after its ://, as SQLAlchemy's make_url reads it."""


class StoreSettings(_Section):
    """Where monitord keeps everything it learns."""

    url: str = "sqlite:///var/monitord.db"
    retention_days: int = Field(default=400, ge=MIN_RETENTION_DAYS, le=MAX_RETENTION_DAYS)
    files_dir: str = Field(default="var/evidence", min_length=1)
    """The folder the evidence register copies its documents into (`monitord evidence add`)."""

    @field_validator("url")
    @classmethod
    def _valid_sqlalchemy_url(cls, value: str) -> str:
        # Checked by hand, not by SQLAlchemy's make_url: every command reads the config, and
        # most (monitord analyse) should not pay for importing SQLAlchemy.
        scheme, sep, rest = value.partition("://")
        if not sep or not re.fullmatch(r"[a-z][a-z0-9]*(\+[a-z0-9_]+)?", scheme):
            raise ValueError("a SQLAlchemy database URL such as sqlite:///var/monitord.db")
        if scheme.split("+")[0] not in ("sqlite", "postgresql"):
            raise ValueError("a sqlite:// or postgresql:// URL")
        if scheme not in STORE_SCHEMES:
            # Any other driver is not installed: it failed at the first command with a traceback.
            raise ValueError(f"a driver monitord installs: {', '.join(STORE_SCHEMES)}")
        if scheme.startswith("sqlite"):
            path = rest.partition("?")[0]
            if not path.startswith("/") or path in ("/", "/:memory:"):
                # An in-memory database keeps nothing once the command ends.
                raise ValueError("a database file such as sqlite:///var/monitord.db")
        else:
            # Read as SQLAlchemy reads it: the password runs from user: to the first @.
            userinfo = _STORE_USERINFO.match(rest)
            password, after = "", rest
            if userinfo is not None:
                password, after = userinfo["password"] or "", rest[userinfo.end() :]
            host_part = re.split("[/?]", after, maxsplit=1)[0]
            if "/" in password or "@" in host_part:
                # SQLAlchemy took the password's tail after a @ for the host, and a driver's
                # error quoted it; urlsplit read the URL up to a / and echoed the password.
                raise ValueError(
                    "a postgresql:// URL whose password has each @ written as %40 and each / as %2F"
                )
            try:
                urlsplit("//" + host_part).port  # noqa: B018 - checked only when read
            except ValueError:
                raise ValueError("a postgresql:// URL whose port is a number up to 65535") from None
        return value


class PortalSettings(_Section):
    """The portal's catalogue interface (spec/catalogue-api.md)."""

    url: str = "http://127.0.0.1:8300"
    token_file: NonEmpty | None = None
    """A file holding the bearer token; otherwise $MONITORD_PORTAL_TOKEN is used."""
    sync_interval_seconds: int = Field(default=900, gt=0, le=DAY)
    page_size: int = Field(default=200, gt=0, le=1000)
    timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    retries: int = Field(default=3, ge=0, le=10)
    backoff_seconds: float = Field(default=2.0, ge=0, le=60)
    max_gone_fraction: float = Field(default=0.5, gt=0, le=1)
    """A catalogue that would mark more than this share of known services gone is refused."""
    max_page_mb: float = Field(default=8.0, gt=0, le=1024)
    """A page larger than this is refused, read no further, and the sync fails: 1000 records of
    a few KiB each take about 3 MiB."""
    max_field_kb: int = Field(default=64, gt=0, le=1024 * 1024)
    """A field of a record larger than this (as JSON text) is a filing problem and is not
    stored; the rest of the record is."""

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return http_url(value)


class LoggingSettings(_Section):
    """Readable lines on stderr, JSON lines in a rotated file."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    file: str | None = "var/monitord.log.jsonl"
    """The JSON log; "" (TOML has no null) writes none, the readable lines on stderr only."""
    rotation_mb: int = Field(default=50, gt=0)
    keep_files: int = Field(default=10, gt=0)

    @field_validator("file", mode="before")
    @classmethod
    def _empty_is_no_file(cls, value: object) -> object:
        # One meaning everywhere: the daemon ran without a file while the reload check took
        # Path("") for the working folder and refused every reload.
        return None if value == "" else value


def _probe_kind(value: str) -> str:
    if value not in PROBE_KINDS:
        raise ValueError(f"a probe kind: one of {', '.join(PROBE_KINDS)}")
    return value


def _network(value: str) -> str:
    import ipaddress

    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError("an address or network such as 169.254.0.0/16") from None
    return value


class ProbeSettings(_Section):
    """Probing every online service (clauses 6.3.2 and 6.4)."""

    interval_seconds: float = Field(default=60.0, gt=0, le=DAY)
    """Every online and suspended service is probed once per interval, at a moment of the
    interval's first 80 % fixed by a hash of its id (probing.schedule.slot)."""
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    concurrency: int = Field(default=100, gt=0)
    """Probes in flight at once, over all services."""
    per_service_concurrency: int = Field(default=2, gt=0)
    """Connections open at once to one service, by all its probes together; never more than a
    tenth of its filed max_concurrency (one if it filed fewer than 10)."""
    down_after: int = Field(default=3, gt=0)
    """Consecutive failures before a service is down."""
    up_after: int = Field(default=2, gt=0)
    """Consecutive successes before a down service is up again."""
    slo_ms: float = Field(default=3000.0, gt=0)
    """Latency above which a service is slow (degraded)."""
    deep_kinds: list[Annotated[str, AfterValidator(_probe_kind)]] = Field(
        default_factory=lambda: ["tls", "compatibility", "contract"]
    )
    deep_interval_hours: float = Field(default=24.0, gt=0, le=24 * 31)
    """The expensive kinds run this often, and at once when a service goes online or its
    certificate changes."""
    tls_resume_minutes: float = Field(default=5.0, ge=0, le=24 * 60)
    """The availability probe resumes the TLS session of a host and port's last full handshake
    for this long (`probes.resumption`), as a returning browser does, then makes a full
    one (the certificate checked and its facts read again); at once when the server turns the
    session down. 0: a full handshake every probe."""
    ca_file: str | None = None
    """A PEM bundle trusted besides the system store (services under the government CA)."""
    canaries: list[str] = Field(default_factory=list)
    """URLs that are always up; when every one fails, the round is blind and declares no
    service down (monitord lost the network, not the services)."""
    denied_networks: list[Annotated[str, AfterValidator(_network)]] = Field(
        default_factory=lambda: [
            "169.254.0.0/16",
            "fe80::/10",
            "100.100.100.200/32",
            "fd00:ec2::254/128",
        ]
    )
    raw_retention_days: int = Field(default=30, gt=0, le=MAX_RETENTION_DAYS)
    rollup_retention_days: int = Field(default=400, ge=400, le=MAX_RETENTION_DAYS)
    """Hourly roll-ups (count, failures, latency percentiles) kept for the yearly trend."""
    zones: int = Field(default=1, ge=1, le=2)
    """With 2, every service is probed from two `[cluster] zone`s each round, and is down only
    when both see it down."""

    @field_validator("canaries")
    @classmethod
    def _canary_urls(cls, urls: list[str]) -> list[str]:
        return [http_url(u) for u in urls]

    @field_validator("ca_file")
    @classmethod
    def _readable(cls, value: str | None) -> str | None:
        if value is None:
            return None
        problem = ca_bundle_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value


def _toml_text(value: object) -> object:
    # TOML has dates and times of its own (holidays = [2027-01-01], work_day_start = 08:30:00);
    # they mean the same as the quoted text, so both are taken.
    if isinstance(value, dt.datetime):
        return value  # never a date or a time of day: refused by the string check after
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return value


def ca_bundle_problem(path: str) -> str | None:
    """What is wrong with a CA bundle file, as "expected …" text; None when it loads."""
    import ssl  # here, not at the top: log analysis reads the config and has no use for ssl

    if not Path(path).is_file():
        return "a readable PEM file"
    try:
        # A bare context: loading the system's CAs as well would only cost time here.
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(path)
    except OSError as exc:  # ssl.SSLError too
        # It made every probe round fail with a traceback instead.
        reason = re.sub(r" \(_ssl\.c:\d+\)$", "", exc.strerror or str(exc))
        return f"a PEM file of CA certificates ({reason})"
    return None


def _date(value: str) -> str:
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        raise ValueError("a date such as 2027-01-01") from None
    return value


def _clock_time(value: str) -> str:
    try:
        parsed = dt.time.fromisoformat(value)
    except ValueError:
        raise ValueError("a time of day such as 08:30") from None
    if parsed.tzinfo is not None:
        # Working hours are Asia/Shanghai's; an offset would make them incomparable.
        raise ValueError("a time of day such as 08:30, without an offset (read as Asia/Shanghai)")
    return value


DateText = Annotated[str, BeforeValidator(_toml_text), AfterValidator(_date)]
ClockTime = Annotated[str, BeforeValidator(_toml_text), AfterValidator(_clock_time)]


class FollowedLog(_Section):
    """One access log the daemon follows."""

    path: NonEmpty
    format: Literal["auto", "nginx", "json"] = "auto"


def _request_path(value: str) -> str:
    if not value.startswith("/") or any(c in value for c in "?# \t\r\n"):
        raise ValueError("a request path such as /auth/login (no query, no spaces)")
    return value


class LogSettings(_Section):
    """Access-log analysis (clauses 6.4 c, 7.1, 7.3.1, 8.3 c)."""

    follow: list[FollowedLog] = Field(default_factory=list)
    """Logs read every follow_interval_seconds, across restarts and logrotate."""
    follow_interval_seconds: float = Field(default=300.0, gt=0, le=DAY)
    service_pattern: str | None = None
    """A regular expression (RE2, as the analysis runs it) with a group `service` that finds
    the service id in an nginx request path; unset uses the built-in ^/svc/(?P<service>[^/?#]+)."""
    login_paths: list[Annotated[str, AfterValidator(_request_path)]] | None = Field(
        default=None, min_length=1
    )
    """The portal's login paths (exact, without the query): a 401 there is a failed login, in
    either log. Unset uses the built-in ["/auth/login"]. A request's path is compared as nginx
    serves it: percent escapes decoded, slashes merged, "." and ".." resolved."""
    trusted_proxies: list[Annotated[str, AfterValidator(_network)]] = Field(default_factory=list)
    """Addresses or networks (CIDR) of the proxies in front of nginx. Only a line whose
    $remote_addr is one of them has its X-Forwarded-For read, from the right, and the client is
    the first address that is not a trusted proxy (nginx's set_real_ip_from with
    real_ip_recursive). Empty (the default): nginx is the edge and the client is $remote_addr,
    since X-Forwarded-For is whatever the client sent."""
    holidays: list[DateText] = Field(default_factory=list)
    """Extra statutory holidays, for years the Chinese calendar package does not know yet."""
    workdays: list[DateText] = Field(default_factory=list)
    """Extra make-up working days (调休上班), likewise."""
    work_day_start: ClockTime = "08:30"
    work_day_end: ClockTime = "18:00"

    @field_validator("service_pattern")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        import re

        if value is None:
            return None
        try:
            pattern = re.compile(value)
        except re.error as exc:
            raise ValueError(f"a regular expression ({exc})") from None
        if "service" not in pattern.groupindex:
            raise ValueError("a regular expression with a (?P<service>…) group")
        from monitord.regex import re2_error

        problem = re2_error(value)
        if problem is not None:
            raise ValueError(f"a regular expression RE2 accepts ({problem})")
        return value

    @model_validator(mode="after")
    def _working_day(self) -> LogSettings:
        start, end = (dt.time.fromisoformat(t) for t in (self.work_day_start, self.work_day_end))
        if end <= start:
            raise ValueError(
                f"work_day_end {self.work_day_end} must be after work_day_start "
                f"{self.work_day_start}"
            )
        return self


MAX_SECRET_FILE_KB = 64
"""The largest secret file read: a token takes a few dozen bytes (/dev/zero never ends)."""


def read_secret_file(path: str) -> str:
    """The secret a file holds: its one line, without a byte-order mark or blanks around it.

    The one reader of every secret file (portal.token_file, zap.api_key_file,
    alerts.smtp_password_file, zap.auth_token_files, systemd credentials).
    Raises ValueError saying what was expected instead, without the secret.
    """
    try:
        raw = read_bounded(Path(path), MAX_SECRET_FILE_KB << 10, "a secret file's limit")
    except InputTooLarge:
        raise ValueError(f"a secret file of at most {MAX_SECRET_FILE_KB} KiB") from None
    except OSError as exc:
        raise ValueError(f"a readable file ({exc.strerror})") from None
    try:
        # utf-8-sig: Windows Notepad starts a file with a byte-order mark, never part of a token.
        text = raw.decode("utf-8-sig").strip()
    except UnicodeDecodeError:
        raise ValueError("UTF-8 text") from None
    if not text:
        # An empty file would send no secret at all; say so now, not as a 401 later.
        raise ValueError("the secret in it (the file is empty)")
    if ONE_LINE_BREAKERS.search(text):
        raise ValueError(
            "the secret on one line, without control characters (the file holds more than one "
            "line, or a tab)"
        )
    return text


def _secret_file(value: str) -> str:
    # Read at each scan: checked now as every secret file is, or a bad one made the service's
    # scans run without logging in, or fail every time.
    read_secret_file(value)
    return value


def _readable_file(value: str) -> str:
    # A file read later (report.font at the quarter's end) is checked now: a missing one made
    # the quarterly report fail months after `check-config` said OK.
    if not Path(value).is_file() or not os.access(value, os.R_OK):
        raise ValueError("a readable file")
    return value


class ZapSettings(_Section):
    """The OWASP ZAP instance that the operation unit runs, and how monitord scans with it."""

    enabled: bool = True
    url: str = "http://127.0.0.1:8090"
    api_key_file: NonEmpty | None = None
    """A file holding ZAP's API key; otherwise $MONITORD_ZAP_API_KEY is used."""
    auth_token_files: dict[str, Annotated[NonEmpty, AfterValidator(_secret_file)]] = Field(
        default_factory=dict
    )
    """Service id → a file holding the bearer token of that service's test account."""
    max_concurrent_scans: int = 1
    """Kept so that older configs still load: one ZAP runs one scan at a time."""
    check_interval_seconds: float = Field(default=60.0, gt=0, le=DAY)
    quarterly_spread_days: int = Field(default=21, ge=1, le=60)
    """Quarterly scans are spread over the quarter's first this-many days."""
    quarterly_deadline_days: int = Field(default=75, ge=1, le=90)
    """A service without a finished scan this many days into the quarter is a 7.3.2 finding."""
    spider_max_depth: int = Field(default=5, ge=1)
    spider_max_children: int = Field(default=0, ge=0)
    spider_minutes: int = Field(default=10, ge=1, le=1440)
    ajax_spider: bool = False
    ajax_spider_minutes: int = Field(default=10, ge=1, le=1440)
    passive_deadline_seconds: float = Field(default=600.0, gt=0, le=DAY)
    scan_policy: NonEmpty | None = None
    scan_deadline_minutes: float = Field(default=240.0, gt=0, le=7 * 1440)
    call_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    poll_interval_seconds: float = Field(default=5.0, gt=0, le=600)
    stuck_polls: int = Field(default=60, ge=1, le=10_000)
    page_size: int = Field(default=500, ge=1, le=10_000)
    max_answer_mb: int = Field(default=32, ge=1, le=1024)
    """The largest answer read from ZAP (and ZAP report imported); a larger one is refused."""
    max_field_kb: int = Field(default=64, ge=1, le=16 * 1024)
    """The largest alert text (evidence, description...) kept in a finding; a larger one is
    left out with a note."""
    restart_advice_after_scans: int = Field(default=50, ge=1)
    """ZAP grows in memory: after this many scans monitord logs that ZAP should be restarted."""

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return http_url(value)

    @model_validator(mode="after")
    def _spread_before_deadline(self) -> ZapSettings:
        # A slot after the deadline made the service a 7.3.2 finding before its scan ran.
        if self.quarterly_spread_days >= self.quarterly_deadline_days:
            raise ValueError(
                f"quarterly_spread_days {self.quarterly_spread_days} must be less than "
                f"quarterly_deadline_days {self.quarterly_deadline_days} (every quarterly scan "
                "starts before the deadline)"
            )
        return self

    @field_validator("max_concurrent_scans")
    @classmethod
    def _one_scan_at_a_time(cls, value: int) -> int:
        if value != 1:
            raise ValueError(
                "1: one ZAP runs one scan at a time (each scan starts a new ZAP session, which "
                "would end any other scan), so remove this key"
            )
        return value


def _apprise_url(value: str) -> str:
    if "://" not in value:
        raise ValueError("apprise URLs such as dingtalk://<token>/ or mailto://user@host")
    # Refused here rather than at every delivery: a scheme apprise has no plug-in for
    # (dingtlak://), a plug-in's missing token (wecombot://). The password monitord fills in
    # at send time is not known here: any stands in for it.
    import apprise  # here: `monitord analyse` loads the config, and apprise brings in ssl

    # apprise logs its own ERROR line for a URL it cannot parse, with the URL in it; the
    # refusal below says it once, masked.
    apprise_log = logging.getLogger("apprise")
    was_disabled, apprise_log.disabled = apprise_log.disabled, True
    try:
        plugin = apprise.Apprise.instantiate(value.replace("{smtp_password}", "x"))
    finally:
        apprise_log.disabled = was_disabled
    if plugin is None:
        raise ValueError(
            "an apprise URL it can use: a known scheme (dingtalk, wecombot, feishu, mailtos, "
            "json…) with the token or host it needs, such as dingtalk://<token>/"
        )
    schemes = _plugin_schemes(plugin)
    if urlsplit(value).scheme.lower() not in schemes:
        # apprise takes some robots' web addresses (https://qyapi.weixin.qq.com/…?key=…), but
        # delivery paces, splits and reads a robot's refusal by the URL's scheme: written so,
        # a refused message counted as delivered.
        raise ValueError(
            f"the {plugin.service_name} address in its own scheme: write it as "
            f"{_SCHEME_FORMS.get(schemes[0], schemes[0] + '://…')}"
        )
    return value


# How each chat robot's URL is written, for the message refusing its web address.
_SCHEME_FORMS = {
    "wecombot": "wecombot://<key>",
    "dingtalk": "dingtalk://<token>/",
    "feishu": "feishu://<token>",
    "lark": "lark://<token>",
}


def _plugin_schemes(plugin: Any) -> list[str]:
    """The schemes an apprise plug-in is written with, lower case (protocol and
    secure_protocol are each a name, a tuple of names or None)."""
    schemes: list[str] = []
    for names in (plugin.secure_protocol, plugin.protocol):
        if isinstance(names, str):
            names = (names,)
        schemes += [name.lower() for name in names or ()]
    return schemes


AppriseURL = Annotated[str, AfterValidator(_apprise_url)]
_CONTACT_PATTERN = re.compile(r"([a-z][a-z0-9+.-]*)://(\*|(\*\.)?[a-z0-9-]+(\.[a-z0-9-]+)*)")


def _contact_pattern(value: str) -> str:
    found = _CONTACT_PATTERN.fullmatch(value)
    if found is None:
        raise ValueError(
            "a scheme and host such as mailto://*, mailto://example.gov.cn, "
            "mailto://*.example.gov.cn or json://hooks.example.gov.cn"
        )
    if found.group(1) == "mailtos":
        # A contact's address is e-mailed through alerts.smtp_url, whatever it wrote.
        raise ValueError("mailto://… for e-mail addresses (they are sent through alerts.smtp_url)")
    return value


def _smtp_url(value: str) -> str:
    if urlsplit(value).scheme not in ("mailto", "mailtos") or not urlsplit(value).hostname:
        raise ValueError(
            "a mailto:// or mailtos:// URL of the SMTP server, such as "
            "mailtos://monitord:{smtp_password}@smtp.example.gov.cn?from=monitord@example.gov.cn"
        )
    return value


ContactPattern = Annotated[str, AfterValidator(_contact_pattern)]
SeverityName = Severity  # one list of severities: monitord.types


class EscalationLevel(_Section):
    """One step of the escalation chain: who is told when the one before did not acknowledge."""

    name: NonEmpty
    urls: list[AppriseURL] = Field(min_length=1)


class Route(_Section):
    """Extra channels for matching incidents; an empty list matches everything."""

    severities: list[SeverityName] = Field(default_factory=list)
    kinds: list[str] = Field(default_factory=list)
    services: list[str] = Field(default_factory=list)
    urls: list[AppriseURL] = Field(min_length=1)


def _date_time(value: object) -> object:
    # A TOML date-time is what the documented example shows; quoted ISO text means the same.
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("a date-time such as 2026-12-05T22:00:00+08:00") from None
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        raise ValueError("a date-time with its time of day, such as 2026-12-05T22:00:00+08:00")
    return value


DateTime = Annotated[dt.datetime, BeforeValidator(_date_time)]


class MaintenanceWindow(_Section):
    """A planned window during which availability alerts for these services stay quiet."""

    start: DateTime
    end: DateTime
    services: list[str] = Field(default_factory=list)
    """Service ids; empty means every service."""
    reason: str = ""

    @field_validator("start", "end")
    @classmethod
    def _aware(cls, value: dt.datetime) -> dt.datetime:
        return value if value.tzinfo else value.replace(tzinfo=SHANGHAI)

    @model_validator(mode="after")
    def _in_order(self) -> MaintenanceWindow:
        # A window that ends before it starts never matches: the alerts it was meant to quiet
        # would go out.
        if self.end <= self.start:
            raise ValueError(
                f"end {self.end.isoformat()} must be after start {self.start.isoformat()}"
            )
        return self


ROBOT_RATES = {"dingtalk": 20, "wecombot": 20, "feishu": 100}
"""Messages a minute a chat robot takes, by URL scheme, unless alerts.rate_per_minute says."""


class AlertSettings(_Section):
    """Where alerts go: apprise URLs (DingTalk, WeCom, Feishu, mailto://...)."""

    oncall: list[AppriseURL] = Field(default_factory=list)
    management: list[AppriseURL] = Field(default_factory=list)
    escalation: list[EscalationLevel] = Field(default_factory=list)
    routes: list[Route] = Field(default_factory=list)
    service_contacts: bool = True
    """Also tell the contacts that the catalogue lists for the service, as contact_allow allows."""
    contact_allow: list[ContactPattern] = Field(default_factory=lambda: ["mailto://*"])
    """Which catalogue contacts may be alerted, by scheme and host (`*`, `*.example.gov.cn`, or
    a name); a provider writes the catalogue, so anything else it lists is refused. An e-mail
    address (mailto://, host = its domain) is sent through smtp_url, never a server it names."""
    smtp_url: Annotated[str, AfterValidator(_smtp_url)] | None = None
    """The SMTP server that e-mails catalogue contacts: a mailto(s):// URL whose `to` is each
    contact's address; {smtp_password} is filled in as in any URL of this section."""
    maintenance: list[MaintenanceWindow] = Field(default_factory=list)
    storm_threshold: int = Field(default=10, ge=2)
    """This many availability incidents opening together become one grouped alert; this many
    alerts due at once on one channel go several to a message (alerts.pacing)."""
    rate_per_minute: dict[str, Annotated[int, Field(gt=0, le=10_000)]] = Field(
        default_factory=lambda: dict(ROBOT_RATES)
    )
    """Messages a minute one channel of a scheme takes (DingTalk's and WeCom's robots 20, then
    they block; Feishu's 100). Past it, alerts are folded into digests, never dropped."""
    undelivered_minutes: int = Field(default=10, gt=0, le=NOTIFY_WITHIN_MINUTES)
    """A 7.3.3 notification no management channel confirmed within this many minutes alerts
    on-call and the top of the escalation chain to phone it in."""
    delivery_interval_seconds: float = Field(default=5.0, gt=0, le=300)
    retry_seconds: float = Field(default=15.0, gt=0, le=3600)
    retry_max_seconds: float = Field(default=600.0, gt=0, le=DAY)
    smtp_password_file: NonEmpty | None = None
    """A file holding the SMTP password; otherwise $MONITORD_SMTP_PASSWORD is used. Write
    `{smtp_password}` in a mailto:// URL where the password belongs."""

    @field_validator("rate_per_minute")
    @classmethod
    def _rates_over_defaults(cls, rates: dict[str, int]) -> dict[str, int]:
        # Delivery looks a rate up by the URL's scheme in lower case: DingTalk = 20 never
        # matched. A key left out keeps its default: { dingtalk = 10 } dropped WeCom's 20.
        return {**ROBOT_RATES, **{scheme.lower(): rate for scheme, rate in rates.items()}}

    @model_validator(mode="after")
    def _retry_order(self) -> AlertSettings:
        if self.retry_max_seconds < self.retry_seconds:
            raise ValueError(
                f"retry_max_seconds {self.retry_max_seconds:g} must be at least retry_seconds "
                f"{self.retry_seconds:g}"
            )
        return self


class ReviewSettings(_Section):
    """The quarterly review of the platform's admin accounts (clause 7.3.2)."""

    dormant_days: int = Field(default=90, gt=0, le=3660)
    """An admin account with no login for this many days before the review is flagged dormant."""


CLOCK = "clause 7.3.3: a security event is notified to the management unit within two hours"


class IncidentSettings(_Section):
    """How findings become incidents, and the clause 7.3.3 two-hour clock."""

    open_severity: SeverityName = "medium"
    """Findings at or above this severity open (or join) an incident."""
    notify_within_minutes: int = Field(default=120, gt=0, le=NOTIFY_WITHIN_MINUTES)
    reminder_minutes: list[int] = Field(default_factory=lambda: [30, 60, 90, 110])
    escalate_after_minutes: int = Field(default=30, gt=0, le=1440)
    """Unacknowledged this long, an incident goes to the next level of the chain (and so on)."""
    check_interval_seconds: float = Field(default=30.0, gt=0, le=300)
    security_kinds: list[str] = Field(default_factory=lambda: list(SECURITY_KINDS))
    """Security kinds carry the two-hour clock; more may be added, none taken away (7.3.3)."""
    availability_kinds: list[str] = Field(default_factory=lambda: list(AVAILABILITY_KINDS))
    quiet_kinds: list[str] = Field(default_factory=lambda: list(QUIET_KINDS))
    """Findings of these kinds open no incident: they are duties for the quarterly report, not
    emergencies (a missing HSTS header, an incomplete filing)."""
    rule_kinds: dict[str, str] = Field(default_factory=dict)
    """Finding rule (a glob) → incident kind, overriding the kind the rule declares in
    rules/*.toml; the first match in this order wins. A security rule cannot be made quiet."""

    @model_validator(mode="after")
    def _consistent(self) -> IncidentSettings:
        known = set(self.security_kinds) | set(self.availability_kinds) | set(self.quiet_kinds)
        both = set(self.security_kinds) & set(self.availability_kinds)
        if both:
            raise ValueError(f"a kind cannot be both security and availability: {sorted(both)}")
        silenced = set(self.security_kinds) & set(self.quiet_kinds)
        if silenced:
            raise ValueError(f"a kind cannot be both security and quiet: {sorted(silenced)}")
        for rule, kind in self.rule_kinds.items():
            if kind not in known:
                raise ValueError(
                    f"rule_kinds[{rule!r}] = {kind!r} is not listed in security_kinds, "
                    "availability_kinds or quiet_kinds"
                )
        late = [m for m in self.reminder_minutes if not 0 < m < self.notify_within_minutes]
        if late:
            raise ValueError(
                f"reminder_minutes {late} must fall between 0 and notify_within_minutes"
            )
        self._keep_the_clock()
        return self

    def _keep_the_clock(self) -> None:
        """Refuse what would let a security finding open no incident (clause 7.3.3)."""
        if SEVERITIES.index(self.open_severity) > SEVERITIES.index("high"):
            raise ValueError(
                f"open_severity = {self.open_severity!r} would let high-severity security "
                f"findings open no incident: expected info, low, medium or high ({CLOCK})"
            )
        dropped = [k for k in SECURITY_KINDS if k not in self.security_kinds]
        if dropped:
            raise ValueError(
                f"security_kinds leaves out {', '.join(dropped)}: findings of these kinds would "
                f"open no security incident ({CLOCK}); add kinds, never take them away"
            )


def remapped_security_rule(incidents: IncidentSettings, declared: Mapping[str, str]) -> str | None:
    """What is wrong when incidents.rule_kinds takes a security rule off the two-hour clock
    (mapping it to a quiet or availability kind), given every rule's declared kind; else None.

    Checked where the config is loaded with the rules at hand (monitord.runtime.settings): the
    config itself knows no rule.
    """
    for pattern, kind in incidents.rule_kinds.items():
        if kind in incidents.security_kinds:
            continue
        for rule, declared_kind in declared.items():
            matches = fnmatch.fnmatchcase(rule, pattern) or fnmatch.fnmatchcase(pattern, rule)
            if matches and declared_kind in incidents.security_kinds:
                return (
                    f"rule_kinds[{pattern!r}] = {kind!r} would take the security rule "
                    f"{rule!r} ({declared_kind}) off the two-hour clock ({CLOCK})"
                )
    return None


def unmatched_rule_pattern(incidents: IncidentSettings, declared: Mapping[str, str]) -> str | None:
    """What is wrong when a pattern of incidents.rule_kinds names no rule, given every rule's
    declared kind; else None. A typo there changed no rule's kind, silently."""
    for pattern in incidents.rule_kinds:
        if not any(fnmatch.fnmatchcase(rule, pattern) for rule in declared):
            return (
                f"rule_kinds[{pattern!r}] matches no rule: expected a rule's name (or a glob) "
                "as rules/logs.toml, probes.toml or core.toml write it"
            )
    return None


def _sha256_hex(value: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ValueError(
            "the hex SHA-256 of the token (64 characters 0-9a-f), as `monitord token new` prints"
        )
    return value


def _listen_address(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError("a host and port such as 127.0.0.1:8321 or [::1]:8321")
    # A name made of digits and dots is an IPv4 address, and one in brackets an IPv6 one: a
    # typo there (999.1.1.1) would pass as a host name and fail only when the daemon binds.
    bracketed = host.startswith("[") and host.endswith("]")
    if bracketed or host.replace(".", "").isdigit():
        try:
            ipaddress.ip_address(host[1:-1] if bracketed else host)
        except ValueError:
            raise ValueError("a host and port such as 127.0.0.1:8321 or [::1]:8321") from None
    return value


def _token_name(value: str) -> str:
    """A token's name, the actor of the audit trail: as `monitord token new` makes it."""
    try:
        plain = written_text("name", value, MAX_NAME, one_line_only=True)
    except UsageError:
        plain = ""
    if not plain or plain != value.strip() or printable(value) != value:
        raise ValueError(f"a name of visible characters on one line, at most {MAX_NAME}")
    return value


class ApiToken(_Section):
    """A client of the API and the page: its name (in the audit trail), role and token's hash."""

    name: Annotated[NonEmpty, AfterValidator(_token_name)]
    role: ApiRole
    sha256: Annotated[str, AfterValidator(_sha256_hex)]


class ApiSettings(_Section):
    """The status page, the JSON API and /metrics, served by the daemon itself."""

    enabled: bool = True
    listen: Annotated[str, AfterValidator(_listen_address)] = "127.0.0.1:8321"
    """Where the daemon listens: loopback by default; put a TLS proxy in front to reach it
    from elsewhere."""
    public_url: Annotated[str, AfterValidator(http_url)] | None = None
    """The page's address as people reach it, for the links in alerts."""
    trusted_proxies: list[Annotated[str, AfterValidator(_network)]] = Field(default_factory=list)
    """Addresses or networks (CIDR) of the TLS proxy in front: a request from one of them has
    its X-Forwarded-For read (from the right, as for [logs]) for the client's address, which
    the sign-in limit counts failures against. Empty: the address is the connection's, so
    behind a proxy every browser shares the proxy's."""
    tokens: list[ApiToken] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> ApiSettings:
        names = [token.name for token in self.tokens]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"token names must be unique; {twice[0]!r} is used twice")
        hashes = [token.sha256 for token in self.tokens]
        if len(set(hashes)) != len(hashes):
            raise ValueError("two tokens have the same sha256: give each client its own token")
        return self


class ReportSettings(_Section):
    """The quarterly report for the management unit (the PDF of reports/)."""

    font: Annotated[NonEmpty, AfterValidator(_readable_file)] | None = None
    """A TrueType font with Chinese glyphs (.ttf, or .ttc whose first face is used); when unset,
    the first usable system font (fonts-wqy-zenhei, ...). A file that does not exist or cannot be
    read is refused at load; one that cannot be embedded is an error of the report, never a
    silent fallback."""
    operation_unit: NonEmpty = "苏商通运营单位"
    """The operation unit (运营单位) that writes and submits the report: its cover's 报送单位."""
    management_unit: NonEmpty = "苏州市数据局"
    """The management unit (管理单位) the report is submitted to: its cover's 主送单位."""
    worst_services: int = Field(default=10, ge=1, le=200)
    """How many of the least available services the report names, and of the ranking's top
    and bottom."""
    dir: NonEmpty = "var/reports"
    """Where `monitord report` and the quarterly job write the PDFs (monitord-2026q3.pdf); a
    relative path is taken from the working directory, like store.url's SQLite file."""


class ComplianceSettings(_Section):
    """The quarterly compliance rules' defaults (rules/compliance.toml)."""

    uptime_percent: float = Field(
        default=99.9, ge=UPTIME_TARGET_PERCENT[0], le=UPTIME_TARGET_PERCENT[1]
    )
    """Clause 6.4 a: the uptime a service must reach in a quarter when its filing names no
    target of its own (`slo.uptime_percent` in the catalogue record)."""
    p95_ms: float = Field(default=3000.0, gt=0, le=600_000)
    """Clause 6.4 b: the quarter's p95 latency a service must stay under when its filing names
    no target of its own (`slo.p95_ms` in the catalogue record)."""


EVALUATION_PARTS = ("availability", "latency", "incidents", "findings", "compliance", "complaints")


class EvaluationSettings(_Section):
    """Clause 9.2: the weight of each part of a service's quarterly score; each at least 0,
    together 1."""

    availability: float = Field(default=0.30, ge=0, le=1)
    latency: float = Field(default=0.15, ge=0, le=1)
    incidents: float = Field(default=0.15, ge=0, le=1)
    findings: float = Field(default=0.15, ge=0, le=1)
    compliance: float = Field(default=0.15, ge=0, le=1)
    complaints: float = Field(default=0.10, ge=0, le=1)

    @model_validator(mode="after")
    def _sum_to_one(self) -> EvaluationSettings:
        total = sum(self.weights().values())
        if abs(total - 1) > 1e-6:
            raise ValueError(
                f"the weights {' + '.join(EVALUATION_PARTS)} sum to {total:g}, expected 1"
            )
        return self

    def weights(self) -> dict[str, float]:
        """Each part's weight by name, in the order of EVALUATION_PARTS."""
        return {part: float(getattr(self, part)) for part in EVALUATION_PARTS}


class Secrets(BaseModel):
    """Secrets resolved at load time; repr and str never show their values."""

    model_config = ConfigDict(frozen=True)

    portal_token: SecretStr | None = None
    zap_api_key: SecretStr | None = None
    smtp_password: SecretStr | None = None


class ClusterSettings(_Section):
    """This daemon among several on one PostgreSQL store (see README, "Running several
    daemons"). On SQLite there is one daemon, and these only name it."""

    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")] | None = (
        None
    )
    """The daemon's name in the cluster; every row it writes names it. Default: the host name."""
    zone: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")] = (
        "default"
    )
    """Where the daemon probes from (a machine room, a network); see probes.zones."""
    heartbeat_seconds: float = Field(default=2.0, ge=0.5, le=60.0)
    """How often the daemon says it is alive and renews the leases of the jobs it runs."""
    lease_seconds: float = Field(default=7.0, ge=2.0, le=600.0)
    """How long a daemon that stopped answering keeps its jobs and its share of the probes:
    the others take them over after this."""

    @model_validator(mode="after")
    def _lease_outlives_heartbeats(self) -> ClusterSettings:
        if self.lease_seconds < 2 * self.heartbeat_seconds:
            raise ValueError(
                "lease_seconds must be at least twice heartbeat_seconds (a lease must survive "
                "one lost heartbeat)"
            )
        return self

    def member_name(self) -> str:
        """The configured name, else the host name (shortened to what a name may hold)."""
        if self.name is not None:
            return self.name
        host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()) or "monitord"
        return host[:63]


class Settings(_Section):
    """The whole configuration tree."""

    daemon: DaemonSettings = DaemonSettings()
    store: StoreSettings = StoreSettings()
    portal: PortalSettings = PortalSettings()
    logging: LoggingSettings = LoggingSettings()
    probes: ProbeSettings = ProbeSettings()
    logs: LogSettings = LogSettings()
    zap: ZapSettings = ZapSettings()
    alerts: AlertSettings = AlertSettings()
    incidents: IncidentSettings = IncidentSettings()
    api: ApiSettings = ApiSettings()
    review: ReviewSettings = ReviewSettings()
    report: ReportSettings = ReportSettings()
    compliance: ComplianceSettings = ComplianceSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    cluster: ClusterSettings = ClusterSettings()
    secrets: Secrets = Field(default_factory=Secrets, exclude=True)
    source: str = Field(default="(built-in defaults)", exclude=True)

    @model_validator(mode="after")
    def _route_kinds_known(self) -> Settings:
        # A route matches an incident by its kind: a misspelt kind never matched, silently.
        incidents = self.incidents
        known = [*incidents.security_kinds, *incidents.availability_kinds, *incidents.quiet_kinds]
        for index, route in enumerate(self.alerts.routes):
            unknown = [kind for kind in route.kinds if kind not in known]
            if unknown:
                raise ValueError(
                    f"alerts.routes[{index}].kinds: {unknown[0]!r} is not an incident kind, "
                    f"expected one of {', '.join(known)}"
                )
        return self


_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "model_type": "a table",
    "dict_type": "a table",
    "datetime_type": "a date-time such as 2026-12-05T22:00:00+08:00",
    "string_too_short": "a non-empty string",
    "too_short": "a non-empty list",
}


def _is_secret_key(key: str) -> bool:
    return any(word in key.lower() for word in SECRET_WORDS) and not key.endswith("_file")


def _table_model(annotation: Any) -> type[BaseModel] | None:
    """The model of a table, also inside list[...] (an array of tables) and Optional."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        model = _table_model(arg)
        if model is not None:
            return model
    return None


def _known_keys(loc: tuple[int | str, ...]) -> str:
    model: type[BaseModel] | None = Settings
    for part in loc:
        if isinstance(part, int):
            continue  # one table of an array of tables ([[alerts.escalation]])
        field = model.model_fields.get(part) if model is not None else None
        model = _table_model(field.annotation) if field is not None else None
    if model is None:
        return "(none)"
    return ", ".join(name for name, f in model.model_fields.items() if not f.exclude)


def _expected(error: ErrorDetails) -> str:
    kind = error["type"]
    ctx = error.get("ctx", {})
    if kind in _EXPECTED:
        return _EXPECTED[kind]
    if kind == "greater_than":
        return f"a number greater than {ctx['gt']:g}"
    if kind == "greater_than_equal":
        limit = ctx["ge"]
        if error["loc"][-1] == "retention_days":
            return f"at least {limit} days (clause 7.3.1: logs are kept six months, up to 184 days)"
        if error["loc"][-1] == "uptime_percent":
            return f"at least {limit:g} (a percentage: 99.9, not the fraction 0.999)"
        return f"at least {limit}"
    if kind == "less_than_equal":
        if error["loc"][-1] == "notify_within_minutes":
            return f"at most {ctx['le']:g} (clause 7.3.3: notified within two hours)"
        return f"at most {ctx['le']:g}"
    if kind == "string_pattern_mismatch" and error["loc"][-1] in ("name", "zone"):
        # The one pattern of the config: [cluster] name and zone.
        return (
            "letters, digits, '.', '_' or '-', starting with a letter or digit, at most 63 "
            "characters"
        )
    if kind == "literal_error":
        return f"one of {ctx['expected']}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    return error["msg"]


# Keys whose values are URLs or lists of them: a value there that is not a URL may be a bare
# token (an apprise URL pasted without its scheme), so it is masked as a token would be.
_URL_USER = re.compile(r"(?<=://)[^/@:]+(?=@)")
_ALERT_URL_KEYS = frozenset({"oncall", "management", "urls"})
_URL_KEYS = frozenset({"url", "urls", "oncall", "management", "canaries"})


def _shown_value(loc: tuple[int | str, ...], value: Any) -> str:
    """A value as an error message echoes it: JSON, secrets hidden, URLs' secrets masked."""
    # A token's sha256 that is refused is most often the token itself, pasted in its place.
    if loc and (_is_secret_key(str(loc[-1])) or loc[-1] == "sha256"):
        return "(hidden)"
    if isinstance(value, str) and _URL_KEYS.intersection(str(part) for part in loc):
        value = mask_url(value)
        if _ALERT_URL_KEYS.intersection(str(part) for part in loc):
            # An apprise URL's user part is often a key (bogus://KEY@host): hidden as well.
            value = _URL_USER.sub(MASK, value)
    return json.dumps(value, ensure_ascii=False, default=str)


def _format_error(source: str, error: ErrorDetails) -> str:
    """One line for one validation error: where, the value given, and what was expected.

    URLs in it are masked and control characters escaped: it is shown to a person and, on a
    reload, written to the log.
    """
    return one_line(mask_urls(_error_text(source, error)))


def _error_text(source: str, error: ErrorDetails) -> str:
    key = ""
    for part in error["loc"]:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    last = str(error["loc"][-1]) if error["loc"] else ""
    if error["type"] == "extra_forbidden":
        section = str(error["loc"][0])
        env = SECRET_ENV.get((section, last))
        if env is not None and len(error["loc"]) == 2:
            return (
                f"{source}: {key}: secrets are not read from the config file; set {env} "
                f"in the environment or name a file with {section}.{last}_file"
            )
        if _is_secret_key(last):
            # Not one of the secrets monitord reads: naming an environment variable or a
            # *_file key for it would send the user to settings that do not exist.
            return (
                f"{source}: {key}: unknown key (and secrets are not read from the config file), "
                f"expected one of {_known_keys(error['loc'][:-1])}"
            )
        return f"{source}: {key}: unknown key, expected one of {_known_keys(error['loc'][:-1])}"
    if error["type"] == "value_error" and isinstance(error["input"], dict):
        # A check of the whole tree names its keys itself.
        return f"{source}: {key}: {_expected(error)}" if key else f"{source}: {_expected(error)}"
    if error["type"] == "missing":
        return f"{source}: {key}: missing, expected a value"
    value = _shown_value(error["loc"], error["input"])
    return f"{source}: {key} = {value}: expected {_expected(error)}"


def _read_secret(
    key: tuple[str, str], file: str | None, env: dict[str, str], field: str
) -> SecretStr | None:
    """The secret from the file the config names, else its environment variable, else the
    systemd credential of its name; None when none is given."""
    value = env.get(SECRET_ENV[key])
    if file is None and not value and env.get("CREDENTIALS_DIRECTORY"):
        credential = Path(env["CREDENTIALS_DIRECTORY"]) / SECRET_CREDENTIAL[key]
        if credential.exists():
            file, field = str(credential), f"the systemd credential {SECRET_CREDENTIAL[key]}"
    if file is not None:
        where = f"{field} = {json.dumps(file)}" if field.endswith("_file") else field
        try:
            return SecretStr(read_secret_file(file))
        except ValueError as exc:
            raise ConfigError(f"{where}: expected {exc}") from None
    value = (value or "").strip()  # as a file's: a line end kept would break every request
    if value and ONE_LINE_BREAKERS.search(value):
        # A secret is one line: a line break or another control character cannot go into an
        # HTTP header or a URL, and every request with it would fail.
        raise ConfigError(
            f"${SECRET_ENV[key]}: expected the secret on one line, without control characters "
            "(it holds a line break, a tab or another)"
        )
    return SecretStr(value) if value else None


def parse_config(data: dict[str, Any], source: str, env: dict[str, str] | None = None) -> Settings:
    """Validate a config mapping into Settings and resolve its secrets.

    Raises ConfigError whose message lists one line per problem.
    """
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        lines = [_format_error(source, err) for err in exc.errors()]
        raise ConfigError("\n".join(lines)) from None
    environ = dict(os.environ) if env is None else env
    try:
        secrets = Secrets(
            portal_token=_read_secret(
                ("portal", "token"),
                settings.portal.token_file,
                environ,
                "portal.token_file",
            ),
            zap_api_key=_read_secret(
                ("zap", "api_key"),
                settings.zap.api_key_file,
                environ,
                "zap.api_key_file",
            ),
            smtp_password=_read_secret(
                ("alerts", "smtp_password"),
                settings.alerts.smtp_password_file,
                environ,
                "alerts.smtp_password_file",
            ),
        )
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return settings.model_copy(update={"secrets": secrets, "source": source})


def check_daemon_secrets(settings: Settings) -> None:
    """Refuse to start the daemon when an alert URL needs {smtp_password} and none is set.

    Checked when the daemon starts, not at every load: an operator's shell running
    `monitord incidents ack` need not hold the daemon's secrets. Raises ConfigError.
    """
    if settings.secrets.smtp_password is not None:
        return
    needing = urls_needing_smtp_password(settings.alerts)
    if needing:
        # Otherwise every alert to these URLs failed at delivery and was retried for ever.
        raise ConfigError(
            f"{settings.source}: {needing[0]} uses {{smtp_password}}, but no SMTP password is "
            f"set: set {SECRET_ENV['alerts', 'smtp_password']} in the environment or name a "
            "file with alerts.smtp_password_file"
        )


def alert_warnings(settings: Settings) -> list[str]:
    """What the alert config lacks, one line each, for the daemon to say once at start.

    An alert whose audience has no channel is not lost (it waits in the outbox until a reload
    adds one), but nobody hears of it until then.
    """
    alerts = settings.alerts
    lines = []
    if not alerts.oncall:
        lines.append(
            "alerts.oncall lists no channel: incident alerts wait in the outbox until one is "
            "configured (then reload)"
        )
    if not alerts.management:
        lines.append(
            "alerts.management lists no channel: the clause 7.3.3 notifications to the "
            "management unit cannot be sent until one is configured"
        )
    mail_allowed = any(p.startswith("mailto://") for p in alerts.contact_allow)
    if alerts.service_contacts and mail_allowed and alerts.smtp_url is None:
        lines.append(
            "alerts.smtp_url is not set: the e-mail contacts the catalogue lists for each "
            "service are not alerted"
        )
    return lines


def secret_file_warnings(settings: Settings) -> list[str]:
    """The secret files the config names that every user of the machine can read, one line
    each, for `check-config` and the daemon's start to say (a group the daemon shares may
    read them: 0640 is fine)."""
    files = [
        ("portal.token_file", settings.portal.token_file),
        ("zap.api_key_file", settings.zap.api_key_file),
        ("alerts.smtp_password_file", settings.alerts.smtp_password_file),
        *(
            (f"zap.auth_token_files.{service}", file)
            for service, file in settings.zap.auth_token_files.items()
        ),
    ]
    lines = []
    for key, file in files:
        try:
            mode = os.stat(file).st_mode if file else 0
        except OSError:
            continue  # reading it says what is wrong with it
        if mode & stat.S_IROTH:
            lines.append(
                f"{key} {file} can be read by every user of this machine (mode "
                f"{stat.S_IMODE(mode):04o}): chmod o-rwx it (600, or 640 for monitord's group)"
            )
    return lines


def urls_needing_smtp_password(alerts: AlertSettings) -> list[str]:
    """The keys (alerts.oncall[0], alerts.smtp_url...) of the alert URLs that hold
    {smtp_password}."""
    lists: list[tuple[str, list[str]]] = [
        ("alerts.oncall", alerts.oncall),
        ("alerts.management", alerts.management),
    ]
    lists += [(f"alerts.escalation[{i}].urls", e.urls) for i, e in enumerate(alerts.escalation)]
    lists += [(f"alerts.routes[{i}].urls", r.urls) for i, r in enumerate(alerts.routes)]
    keys = [
        f"{key}[{i}]"
        for key, urls in lists
        for i, url in enumerate(urls)
        if "{smtp_password}" in url
    ]
    if alerts.smtp_url is not None and "{smtp_password}" in alerts.smtp_url:
        keys.append("alerts.smtp_url")
    return keys


MAX_CONFIG_FILE_MB = 1
"""The largest config file read: a config takes a few KiB (a /dev/zero given never ends)."""


def load_config(path: str | Path | None, env: dict[str, str] | None = None) -> Settings:
    """Read and validate a config file; None means the built-in defaults.

    Raises ConfigError (one line per problem) for a missing, unreadable or invalid file.
    """
    if path is None:
        return parse_config({}, "(built-in defaults)", env)
    file = Path(path)
    try:
        raw = read_bounded(file, MAX_CONFIG_FILE_MB << 20, "a config file's limit")
    except InputTooLarge as exc:
        raise ConfigError(str(exc)) from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the config file ({exc.strerror})") from None
    try:
        # utf-8-sig: a byte-order mark (Windows Notepad writes one) is not part of the TOML.
        data = tomllib.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise ConfigError(f"{file}: expected UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    return parse_config(data, str(file), env)
