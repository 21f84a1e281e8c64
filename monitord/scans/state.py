"""Where a scan is: its steps, the state the store keeps so a scan survives a restart, and the
driver's settings."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal
from urllib.parse import urlsplit

from monitord import netguard


@dataclass(frozen=True)
class ZapSettings:
    """What the scan driver needs from the `[zap]` config table, passed in explicitly.

    `api_key` is the secret itself, resolved by the caller; it is left out of `repr` so that
    printing the settings never shows it.
    """

    url: str = "http://127.0.0.1:8090"
    api_key: str = field(default="", repr=False)
    spider_max_depth: int = 5
    spider_max_children: int = 0
    """Top-level children the spider follows; 0 means ZAP's default (no limit)."""
    spider_minutes: int = 10
    ajax_spider: bool = False
    ajax_spider_minutes: int = 10
    passive_deadline_s: float = 600.0
    scan_policy: str | None = None
    """ZAP scan policy name for the active scan; None uses ZAP's default policy."""
    scan_deadline_s: float = 4 * 3600.0
    """The whole scan, from its first step; past it the scan is stopped and timed out."""
    call_timeout_s: float = 30.0
    poll_interval_s: float = 5.0
    stuck_polls: int = 60
    """Active-scan polls at one unchanged percentage after which the scan counts as stuck."""
    page_size: int = 500
    denied_networks: tuple[str, ...] = netguard.DEFAULT_DENIED_NETWORKS
    """Networks no scan may target, nor reach through a redirect (`probes.denied_networks`)."""
    max_answer_bytes: int = 32 << 20
    """The largest answer read from ZAP; a larger one is refused (`ZapAnswerTooLarge`)."""
    max_field_bytes: int = 64 << 10
    """The largest alert text (evidence, description...) kept in a finding; a larger one is
    left out with a note saying so."""

    def __post_init__(self) -> None:
        """Refuse values that would make a scan loop or never end."""
        for name in ("spider_max_depth", "spider_minutes", "ajax_spider_minutes", "stuck_polls"):
            if getattr(self, name) < 1:
                raise ValueError(f"zap.{name} must be at least 1, got {getattr(self, name)!r}")
        if self.spider_max_children < 0:
            raise ValueError(
                f"zap.spider_max_children must be >= 0, got {self.spider_max_children}"
            )
        for name in ("passive_deadline_s", "scan_deadline_s", "call_timeout_s", "poll_interval_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"zap.{name} must be positive, got {getattr(self, name)!r}")
        for name in ("max_answer_bytes", "max_field_bytes"):
            if getattr(self, name) < 1024:
                raise ValueError(f"zap.{name} must be at least 1024, got {getattr(self, name)}")
        if not 1 <= self.page_size <= 10_000:
            raise ValueError(f"zap.page_size must be 1..10000, got {self.page_size}")
        if urlsplit(self.url).scheme not in ("http", "https"):
            raise ValueError(f"zap.url must be an http(s) URL, got {self.url!r}")


class Step(StrEnum):
    """The steps of one scan, in `STEPS` order."""

    SESSION = "session"
    CONTEXT = "context"
    AUTH = "auth"
    SPIDER = "spider"
    AJAX_SPIDER = "ajax_spider"
    PASSIVE = "passive"
    ACCESS = "access"
    ACTIVE = "active"
    ALERTS = "alerts"
    DONE = "done"


STEPS: tuple[Step, ...] = tuple(Step)

ScanStatus = Literal["running", "finished", "timed_out", "failed", "interrupted"]


def _iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _from_iso(text: Any) -> dt.datetime | None:
    return None if not text else dt.datetime.fromisoformat(str(text))


@dataclass(frozen=True)
class ScanState:
    """Where one scan stands: what the core persists on every progress report.

    `scan_key` is the store's stable id for the scan; it names the ZAP session and context so
    that a restarted daemon can find them again. The ZAP ids are strings, as ZAP gives them.
    """

    scan_key: str
    target_url: str
    status: ScanStatus = "running"
    step: Step = Step.SESSION
    steps_done: tuple[Step, ...] = ()
    session_name: str = ""
    context_name: str = ""
    context_id: str | None = None
    spider_scan_id: str | None = None
    active_scan_id: str | None = None
    percent: int = 0
    """Progress of the current step, 0–100, when ZAP reports one."""
    started_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    message: str | None = None
    """One line: why the scan failed or timed out, or a note such as a passive queue cut short."""
    retryable: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (times as ISO 8601) for the store."""
        return {
            "scan_key": self.scan_key,
            "target_url": self.target_url,
            "status": self.status,
            "step": self.step.value,
            "steps_done": [s.value for s in self.steps_done],
            "session_name": self.session_name,
            "context_name": self.context_name,
            "context_id": self.context_id,
            "spider_scan_id": self.spider_scan_id,
            "active_scan_id": self.active_scan_id,
            "percent": self.percent,
            "started_at": _iso(self.started_at),
            "updated_at": _iso(self.updated_at),
            "message": self.message,
            "retryable": self.retryable,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScanState:
        """Rebuild a state saved with `to_dict`."""
        return cls(
            scan_key=str(data["scan_key"]),
            target_url=str(data["target_url"]),
            status=data.get("status", "running"),
            step=Step(data.get("step", Step.SESSION.value)),
            steps_done=tuple(Step(s) for s in data.get("steps_done", ())),
            session_name=str(data.get("session_name", "")),
            context_name=str(data.get("context_name", "")),
            context_id=data.get("context_id"),
            spider_scan_id=data.get("spider_scan_id"),
            active_scan_id=data.get("active_scan_id"),
            percent=int(data.get("percent", 0)),
            started_at=_from_iso(data.get("started_at")),
            updated_at=_from_iso(data.get("updated_at")),
            message=data.get("message"),
            retryable=data.get("retryable"),
        )


ProgressCallback = Callable[[ScanState], Awaitable[None]]


def state_json(state: ScanState) -> str:
    """The state as a JSON string, for a store column of type TEXT."""
    return json.dumps(state.to_dict(), ensure_ascii=False, sort_keys=True)
