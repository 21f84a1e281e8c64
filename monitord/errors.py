"""monitord's exception types, in one place.

MonitordError            anything monitord reports to a user as one line, never a traceback
├── ConfigError          the configuration file is missing, unreadable or invalid (exit 2)
├── StoreError           the store cannot be opened or migrated
├── SyncError            a catalogue sync could not read a whole, valid catalogue
├── UsageError           a command was given something it cannot work with (exit 2)
│   └── ZapReportError   (monitord.scans.report_import) a file is not a ZAP report monitord can read
├── RuleError            a rule file (rules/*.toml) does not describe valid rules
└── ZapError             (monitord.scans.zap) ZAP failed; `.retryable` says whether to try later
    ├── ZapUnavailable, ZapAuthRejected, ZapTimeout, ZapBadAnswer, ZapDeadline, ZapScanStuck,
    │   ZapTargetRefused (a URL ZAP must not be pointed at)
    └── ZapApiError      ZAP answered with an error code
        └── ZapScanForgotten, ZapUrlNotFound, ZapBusy

The ZAP errors live beside the driver that raises them; they are listed here so that this
docstring stays the one map of monitord's errors.
"""

from __future__ import annotations


class MonitordError(Exception):
    """Base of every error that monitord reports to a person as one line."""


class ConfigError(MonitordError):
    """The configuration is invalid; the message names the key, the value and what was expected."""


class StoreError(MonitordError):
    """The store could not be opened, migrated or written."""


class SyncError(MonitordError):
    """A catalogue sync failed; the message is the reason recorded with the failed sync run."""


class UsageError(MonitordError):
    """A command-line argument or input file cannot be used."""


class RuleError(MonitordError):
    """A rule file does not describe valid rules; the message names the file or rule and key."""
