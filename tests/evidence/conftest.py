"""A config whose store and evidence folder live in the test's folder, for the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitord.store import open_store


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A monitord.toml with a SQLite store (as the daemon's first start leaves it) and the
    evidence folder under tmp_path."""
    path = tmp_path / "monitord.toml"
    path.write_text(
        f'[store]\nurl = "sqlite:///{tmp_path / "m.db"}"\nfiles_dir = "{tmp_path / "evidence"}"\n',
        encoding="utf-8",
    )
    open_store(f"sqlite:///{tmp_path / 'm.db'}").dispose()
    return path
