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

if TYPE_CHECKING:
    from monitord.app import App


def config_path(args: argparse.Namespace) -> Path | None:
    """The config file to read: --config, $MONITORD_CONFIG, ./monitord.toml, or none."""
    if args.config:
        return Path(args.config)
    if os.environ.get("MONITORD_CONFIG"):
        return Path(os.environ["MONITORD_CONFIG"])
    local = Path("monitord.toml")
    return local if local.exists() else None


def settings_for(args: argparse.Namespace) -> Settings:
    """The validated settings the command line points at."""
    return load_config(config_path(args))


def app_for(args: argparse.Namespace) -> App:
    """The App (store opened and migrated) for the settings the command line points at."""
    # Imported here: the App brings sqlalchemy, alembic and aiohttp, which only store commands need.
    from monitord.app import build_app

    return build_app(settings_for(args))


def actor(args: argparse.Namespace) -> str:
    """Who is acting, for the audit trail: --by, else the sudo user, else the login."""
    return str(getattr(args, "by", None) or os.environ.get("SUDO_USER") or getpass.getuser())


def print_json(value: Any) -> None:
    """Print a JSON document for people and scripts alike (Chinese text kept readable)."""
    print(json.dumps(value, ensure_ascii=False, indent=2))
