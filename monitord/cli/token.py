"""`monitord token new`: a token for the status page and the API, shown once."""

from __future__ import annotations

import argparse
import json
from typing import Any

from monitord.cli.common import settings_for
from monitord.errors import UsageError
from monitord.redact import printable
from monitord.textable import written_text
from monitord.types import API_ROLES, MAX_NAME


def cmd_token_new(args: argparse.Namespace) -> int:
    """Print a fresh token once, and the [[api.tokens]] table that lets it in."""
    from monitord.runtime.web.auth import new_token, token_hash

    # The name is the actor of the audit trail: checked as --by is, and as the config checks it.
    name = written_text("token name", args.name, MAX_NAME, one_line_only=True)
    if not name or printable(name) != name:
        raise UsageError(f"token name {json.dumps(args.name)}: use visible characters only")
    settings = settings_for(args)
    if any(token.name == name for token in settings.api.tokens):
        raise UsageError(
            f"{settings.source} already has a token named {json.dumps(name)}: pick another "
            "name, or remove its [[api.tokens]] table first"
        )
    token = new_token()
    print(f"token for {name} ({args.role}), shown this once; give it to its holder only:")
    print(f"  {token}")
    print("add this to the config, then reload the daemon (systemctl reload monitord):")
    print("[[api.tokens]]")
    print(f"name = {json.dumps(name, ensure_ascii=False)}")
    print(f'role = "{args.role}"')
    print(f'sha256 = "{token_hash(token)}"')
    return 0


def add_token_command(sub: Any) -> None:
    """Register `token new` on the main parser's subparsers."""
    p = sub.add_parser(
        "token",
        help="make a token for the status page and the API",
        description="make a token for the status page and the API",
    )
    words = p.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    new = words.add_parser(
        "new",
        help="print a fresh token once, and the config lines that let it in",
        description="print a fresh token once, and the config lines that let it in",
    )
    new.add_argument("name", help="who holds it (shown in the audit trail)")
    new.add_argument(
        "--role",
        choices=list(API_ROLES),
        required=True,
        help="viewer reads; oncall also acknowledges, notifies and silences; admin also "
        "accepts risks and triggers scans",
    )
    new.set_defaults(handler=cmd_token_new)
