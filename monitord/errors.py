"""monitord's exception types, in one place.

MonitordError            anything monitord reports to a user as one line, never a traceback
├── ConfigError          the configuration file is missing, unreadable or invalid (exit 2)
├── StoreError           the store cannot be opened or migrated
│   └── Replaced         (monitord.cluster) another process took this daemon's place in the cluster
├── SyncError            a catalogue sync could not read a whole, valid catalogue
├── UsageError           a command was given something it cannot work with (exit 2)
│   ├── Refused          an incident action refused, with the reason and the field as codes
│   │                    (the status page words them in Chinese; the message is the CLI's)
│   ├── InputTooLarge    (monitord.files) a file to read is over its size limit
│   ├── ZapReportError   (monitord.scans.report_import) a file is not a ZAP report monitord can read
│   └── Outdated         what a person saw changed before they acted on it (a notification sent
│                        meanwhile by someone else, or the same form sent twice)
├── RuleError            a rule file (rules/*.toml) does not describe valid rules
├── ReportError          (reports/) the quarterly report cannot be drawn (no usable CJK font)
└── ZapError             ZAP failed; `.retryable` says whether to try later (each below, with
    │                    when it is retried: monitord.scans.zap's docstring)
    ├── ZapUnavailable, ZapAuthRejected, ZapTimeout, ZapDeadline, ZapScanStuck,
    │   ZapTargetRefused (a URL ZAP must not be pointed at), ZapOccupied (another scan runs)
    ├── ZapBadAnswer     an answer of the wrong shape
    │   └── ZapAnswerTooLarge
    └── ZapApiError      ZAP answered with an error code
        └── ZapScanForgotten, ZapUrlNotFound, ZapBusy

LeaseLost                (monitord.cluster) a once-only job's lease passed to another daemon
                         while the job ran: its commit is refused. Not a MonitordError: no job
                         may take it for its own failure; the daemon ends the run with a warning.
"""

from __future__ import annotations

from typing import Any


class MonitordError(Exception):
    """Base of every error that monitord reports to a person as one line."""


class ConfigError(MonitordError):
    """The configuration is invalid; the message names the key, the value and what was expected."""


class StoreError(MonitordError):
    """The store could not be opened, migrated or written."""


class Replaced(StoreError):
    """Another process joined the cluster under this daemon's name while this one was silent
    (paused, or cut off longer than a lease): this one must stop, it no longer holds anything."""


class LeaseLost(Exception):
    """Another daemon took the lease of the once-only job that was about to commit: the
    commit is refused, so that two daemons never both write one job's work."""


class SyncError(MonitordError):
    """A catalogue sync failed; the message is the reason recorded with the failed sync run."""


class UsageError(MonitordError):
    """A command-line argument or input file cannot be used."""


class Outdated(UsageError):
    """The state a person acted on changed since they saw it: acting would do something other
    than what they chose (their notification would go out as a follow-up)."""


class Refused(UsageError):
    """An incident action refused for what a person gave or the incident's state. The message
    is the command line's (English, naming its flags); `reason` (a code such as "too_long" or
    "future"), `field` (the form's field at fault: "measures", "at"; None when no one field is)
    and `facts` (what a wording needs: a length, a time) let the status page say it in its own
    words instead."""

    def __init__(
        self, message: str, *, reason: str, field: str | None = None, **facts: Any
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.field = field
        self.facts = facts


class InputTooLarge(UsageError):
    """A file given to read (a --file, the config) is larger than its limit; the message names
    the file and the limit."""


class RuleError(MonitordError):
    """A rule file does not describe valid rules; the message names the file or rule and key."""


class ReportError(MonitordError):
    """The quarterly report cannot be drawn as asked; the message says what to install or set."""


class ZapError(MonitordError):
    """A ZAP failure, told in one line; `retryable` says whether trying later makes sense."""

    retryable: bool = True

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable


class ZapUnavailable(ZapError):
    """Nothing answers at ZAP's address: ZAP is not running, or the address is wrong."""


class ZapAuthRejected(ZapError):
    """ZAP closed the connection without answering, which is how it treats a bad API key."""

    retryable = False


class ZapTimeout(ZapError):
    """One API call did not finish within the per-call timeout."""


class ZapBadAnswer(ZapError):
    """ZAP answered something that is not the shape its API documents."""


class ZapApiError(ZapError):
    """ZAP refused a call with one of its error codes (`does_not_exist`, `url_not_found`, ...)."""

    def __init__(
        self,
        message: str,
        *,
        code: str,
        http_status: int | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message, retryable=retryable)
        self.code = code
        self.http_status = http_status


class ZapScanForgotten(ZapApiError):
    """ZAP no longer knows a scan id or session that monitord started: it was restarted."""


class ZapUrlNotFound(ZapApiError):
    """ZAP refused to attack a URL that is not in its sites tree (the target did not answer)."""


class ZapBusy(ZapApiError):
    """ZAP is already running the one scan of this kind it allows (the AJAX spider)."""


class ZapDeadline(ZapError):
    """The scan passed its deadline and was stopped in ZAP (the reason of a timed-out scan)."""


class ZapScanStuck(ZapError):
    """The active scan reported the same percentage for too many polls and was stopped."""


class ZapAnswerTooLarge(ZapBadAnswer):
    """A ZAP answer over the size cap (`zap.max_answer_mb`), refused unread past it; trying
    again reads the same answer, so it is not retried. An alerts page over the cap is read
    again in smaller pages (`ZapScanner.read_alerts`): only a single alert over it gets here."""

    retryable = False


class ZapOccupied(ZapError):
    """A live process (the daemon, or `monitord scan ID --wait`) is running a scan: it owns
    ZAP's one session, so no other scan starts until it ends."""


class ZapTargetRefused(ZapError):
    """The service URL is not one ZAP may be pointed at; ZAP was not asked to scan it."""

    retryable = False
