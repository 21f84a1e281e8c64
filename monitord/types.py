"""Value types shared by the core and its plug-ins (probes, rules).

Probes and rules import from here and from nothing else in the core: they get facts in and hand
values back; the core decides what to store and whom to tell.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args
from urllib.parse import urlsplit

from monitord.timeutil import Clock, system_clock

if TYPE_CHECKING:
    import ssl  # 4 MiB: log analysis, which imports this module, has no use for it

    import aiohttp

MAX_ID = 2**31 - 1
"""The largest id a store holds (ids are PostgreSQL's 32-bit INTEGER); a larger one names
nothing, and asking for it must not reach the database (SQLite refuses it with an error)."""

MAX_NAME = 200
"""The most characters of a person's name monitord keeps (who filed, accepted, silenced…: the
store's String(200) columns)."""

MAX_LONG_TEXT = 4000
"""The most characters of a text people write for monitord to keep: a part of a notification, a
reason, a note."""
TEXT_CONTROLS = "\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f"
"""Control characters (a regex class's content) no text people write may hold: tabs and line
ends may (a notification has paragraphs). PostgreSQL refuses NUL in text, and the rest is never
meant (an escape sequence rewriting a terminal)."""

ONE_LINE_BREAKERS = re.compile("[\x00-\x1f\x7f]")
"""Every control character, tabs and line breaks included: none may stand in a value that must
be one line (a secret sent in a header, a path a browser is sent to)."""

Severity = Literal["info", "low", "medium", "high", "critical"]
SEVERITIES: tuple[Severity, ...] = ("info", "low", "medium", "high", "critical")
SEVERITY_RANK: dict[str, int] = {name: rank for rank, name in enumerate(SEVERITIES)}
"""Severities in order, for comparing them: info 0 … critical 4."""

SECURITY_KINDS = (
    "vulnerability",
    "abnormal_behaviour",
    "insecure_transport",
    "certificate_compromise",
    "data_exposure",
    "other",
)
"""Incident kinds that are security events (clause 7.3.3): each carries the two-hour clock. The
config may add kinds to this class but never take one away."""
AVAILABILITY_KINDS = ("outage", "degraded", "certificate_expiry")
QUIET_KINDS = ("compliance",)
"""Findings of these kinds open no incident; the quarterly report counts them."""
INCIDENT_KINDS = (*SECURITY_KINDS, *AVAILABILITY_KINDS, *QUIET_KINDS)
"""Every incident kind a rule may name (`incident = …` in rules/*.toml)."""

ApiRole = Literal["viewer", "oncall", "admin"]
API_ROLES: tuple[ApiRole, ...] = get_args(ApiRole)
"""In rising order: a viewer reads; on-call also acknowledges, notifies, resolves and silences;
an admin also accepts risks and triggers scans."""

IN_SERVICE = ("online", "suspended")
"""The catalogue statuses of a service in service: the probes watch it (7.2.2: a suspended
service is still probed), and only such a service is taken down (7.2.4)."""

PROBE_KINDS = ("availability", "tls", "compatibility", "contract")
"""The probe kinds, in the order they are shown. `probes.PROBES` registers one function for each
(a test holds the two together); config and the CLI check names against this tuple, which costs
no import of the probes and aiohttp."""

PROBE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "POST"})
"""The HTTP methods a catalogue `probe` may ask for."""


def is_http_status(value: Any) -> bool:
    """Whether a catalogue value is an HTTP status code (an integer from 100 to 599)."""
    return type(value) is int and 100 <= value <= 599


def is_probe_path(value: Any) -> bool:
    """Whether a catalogue `probe.path` is a path on the service's own host: a non-blank text
    with no scheme or host of its own. A filing must not point the probes at another host
    (`http://other/…`, `//other/…`): they would vouch for a service they never reached."""
    if not isinstance(value, str) or not value.strip():
        return False
    # Clients read a backslash as a slash: `\\other\\x` is `//other/x` to them.
    path = value.strip().replace("\\", "/")
    parts = urlsplit(path)
    return not parts.scheme and not parts.netloc and not path.startswith("//")


@dataclass(frozen=True)
class Target:
    """What a probe points at: a URL, and the catalogue service it belongs to when known."""

    url: str
    service_id: str | None = None
    service_name: str | None = None


@dataclass(frozen=True)
class Spec:
    """The base of every probe kind's spec; each kind subclasses it beside its function."""

    timeout_s: float = 10.0


def _loguru_logger() -> Any:
    # Imported when a probe context is made: log analysis, which shares these types, never
    # logs through it and is spared loguru's 8 MiB.
    from loguru import logger

    return logger


ConnectionSlot = Callable[[], AbstractAsyncContextManager[None]]
"""Gives one slot of the probed service's connection limit, held while one connection is open."""


def no_connection_limit() -> AbstractAsyncContextManager[None]:
    """A connection slot that is always free: for a probe run on its own, outside a round."""
    return nullcontext()


@dataclass(frozen=True)
class ProbeContext:
    """Everything a probe may use. Probes create no clients of their own."""

    session: aiohttp.ClientSession
    clock: Clock = system_clock
    logger: Any = field(default_factory=_loguru_logger)
    ssl_context: ssl.SSLContext | None = None
    """Trust store: the system's CAs plus the configured government CA bundle."""
    ca_file: str | None = None
    connection: ConnectionSlot = no_connection_limit
    """A probe holds one slot (`async with ctx.connection():`) for each connection it has open
    to the service, and starts that connection's timeout inside it, so that waiting for a slot
    never counts against a request. A round's `Prober` shares one service's slots among all of
    its probes: never more connections at once than the service's limit."""
    tls_resume_s: float = 0.0
    """The availability probe resumes a host and port's TLS session for this long after the full
    handshake that made it (`probes.tls_resume_minutes`); 0: a full handshake every time."""


@dataclass(frozen=True)
class ProbeResult:
    """The immutable outcome of one probe: success, how long, and the measured facts."""

    kind: str
    target: str
    success: bool
    duration_ms: float
    started_at: dt.datetime
    facts: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    service_id: str | None = None


LOG_QUIET_MINUTES = 360
"""The quiet period of a log rule that names none (rules/logs.toml: quiet_minutes)."""


@dataclass(frozen=True)
class FindingDraft:
    """What a rule or check reports; the core turns it into a stored finding.

    `subject` identifies what the finding is about (a service id, a user, an IP, ...); the same
    rule and subject update one finding rather than opening a new one, episode after episode.
    """

    rule: str
    clause: str
    severity: Severity
    subject_kind: str
    subject: str
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)
    service_id: str | None = None
    occurred_at: dt.datetime | None = None
    """When what it reports began (the first log line, the first failed probe of the streak);
    None means when it is stored."""
    observed_at: dt.datetime | None = None
    """When it was last seen happening (the latest log line); None means when it is stored."""
    quiet_minutes: int | None = None
    """After this long without a new occurrence, the next one is a new episode: a new incident
    with a new two-hour clock. None: only a resolved finding or an ended incident starts one."""


@dataclass(frozen=True)
class ComplianceVerdict:
    """One compliance rule's verdict for one quarter on one service, or on the platform.

    Derived from stored evidence only, so the same store gives the same verdicts whenever the
    quarter is judged again; `evidence` says what the verdict rests on (counts, ids, times).
    """

    rule: str
    clause: str
    service_id: str | None
    """None for a platform-wide rule (the pen test, the admin review, retention)."""
    quarter: str
    passed: bool
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def pending(self) -> bool:
        """Whether the duty is not due yet (the quarter's log audit while the quarter runs):
        then the verdict is shown as pending, neither passed nor failed."""
        return is_pending(self.passed, self.evidence)


def is_pending(passed: bool, evidence: dict[str, Any] | None) -> bool:
    """Whether a verdict (as judged or as stored) is pending: its evidence says its duty is not
    due yet, and nothing failed so far. A failure already found (a day without logs in an
    audit written while the quarter runs) is a failure, due or not."""
    return passed and evidence is not None and evidence.get("pending") is True


@dataclass(frozen=True)
class ServiceScore:
    """A service's clause 9.2 evaluation for one quarter: the score, its parts and its rank."""

    service_id: str
    name: str
    tier: str
    """The source tier of clause 6.1 (the catalogue's `source`), "unknown" when not filed."""
    quarter: str
    score: float
    """0 to 100: the weighted sum of `parts`."""
    parts: dict[str, float] = field(default_factory=dict)
    """Each criterion's own 0-100 figure: availability, latency, incidents, findings,
    compliance, complaints."""
    rank: int = 0
    """1 is best, overall."""
    tier_rank: int = 0
    """1 is best within its tier."""
