"""What every `monitord` subcommand shares: which config to read, the App, who is acting, and
JSON output."""

from __future__ import annotations

import argparse
import getpass
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitord.config import Settings, load_config
from monitord.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from monitord.app import App


def config_path(args: argparse.Namespace) -> Path | None:
    """The config file to read: --config, $MONITORD_CONFIG, ./monitord.toml, or none."""
    if args.config is not None:
        if not args.config:
            # `--config "$UNSET"`: reading ./monitord.toml instead would be a silent surprise.
            raise UsageError("--config: expected a file path, got an empty string")
        return Path(args.config)
    if os.environ.get("MONITORD_CONFIG"):
        return Path(os.environ["MONITORD_CONFIG"])
    local = Path("monitord.toml")
    return local if local.exists() else None


def settings_for(args: argparse.Namespace) -> Settings:
    """The validated settings the command line points at."""
    return load_config(config_path(args))


def open_app(settings: Settings) -> App:
    """The App for settings, the store opened and migrated.

    Raises ConfigError naming store.url when the store's folder cannot be created.
    """
    # Imported here: the App brings sqlalchemy, alembic and aiohttp, which only store commands need.
    from monitord.app import build_app

    try:
        return build_app(settings)
    except OSError as exc:
        # The SQLite file's folder is made on first use; a path under /proc or a read-only
        # mount fails there, before SQLite could say so.
        raise ConfigError(
            f"{settings.source}: store.url: cannot create {exc.filename} ({exc.strerror})"
        ) from None


def app_for(args: argparse.Namespace) -> App:
    """The App (store opened and migrated) for the settings the command line points at."""
    return open_app(settings_for(args))


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (a --limit of 0 or -1 shows all or none)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def actor(args: argparse.Namespace) -> str:
    """Who is acting, for the audit trail: --by, else the sudo user, else the login."""
    return str(getattr(args, "by", None) or os.environ.get("SUDO_USER") or getpass.getuser())


def print_json(value: Any) -> None:
    """Print a JSON document for people and scripts alike (Chinese text kept readable)."""
    print(json.dumps(value, ensure_ascii=False, indent=2))
