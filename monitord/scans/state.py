"""Where a scan is: its steps, the state the store keeps so a scan survives a restart, and the
driver's settings."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from monitord import netguard
from monitord.config import ZapSettings


@dataclass(frozen=True)
class ZapDriverSettings:
    """What the scan driver is given: the validated `[zap]` table, the API key it names
    (resolved by the caller, and left out of `repr` so that printing never shows it), and the
    networks no scan may target nor reach through a redirect (`probes.denied_networks`)."""

    zap: ZapSettings = field(default_factory=ZapSettings)
    api_key: str = field(default="", repr=False)
    denied_networks: tuple[str, ...] = netguard.DEFAULT_DENIED_NETWORKS


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
