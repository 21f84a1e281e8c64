"""What `monitord migrate --check` rests on, on SQLite and PostgreSQL: the pending migrations
listed without changing the store, then applied and said."""

from __future__ import annotations

from sqlalchemy import inspect

from monitord.store import Migration, Store
from tests.conftest import migrated_to


def test_pending_migrations_are_listed_unchanged_then_applied(store_url: str) -> None:
    store = Store(store_url)
    try:
        migrated_to(store, "0008")

        pending = store.pending_migrations()
        assert [m.revision for m in pending] == [
            "0009",
            "0010",
            "0011",
            "0012",
            "0013",
            "0014",
            "0015",
            "0016",
            "0017",
            "0018",
            "0019",
        ]
        assert pending[0].title.startswith("several daemons on one store: cluster members, job")
        assert "\n" not in pending[0].title
        assert store.revision() == "0008"
        assert "cluster_members" not in inspect(store.engine).get_table_names()

        assert store.migrate() == pending
        assert store.revision() == pending[-1].revision
        assert store.pending_migrations() == []
        assert store.migrate() == []
    finally:
        store.dispose()


def test_a_new_store_would_get_every_migration_in_order(store_url: str) -> None:
    store = Store(store_url)
    try:
        pending = store.pending_migrations()
        assert [m.revision for m in pending] == [f"{n:04d}" for n in range(1, 20)]
        assert pending[0] == Migration("0001", "initial schema")
        assert store.revision() is None
    finally:
        store.dispose()
