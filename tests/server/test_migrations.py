"""The Alembic migration builds exactly the schema the models describe, on both databases."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from server import db
from server.models import Base
from tests.server.conftest import BACKENDS


@pytest.fixture(params=BACKENDS)
def empty_database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    cluster = request.getfixturevalue("postgres_cluster")
    name = cluster.create_database()
    yield cluster.url(name)
    cluster.drop_database(name)


def test_migration_matches_models(empty_database_url):
    db.upgrade(empty_database_url)

    engine = db.create_engine(empty_database_url)
    try:
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
            head = connection.exec_driver_sql("SELECT id, last_id, last_hash FROM audit_head").all()
    finally:
        engine.dispose()

    assert differences == []
    assert head == [(1, 0, "0" * 64)]
    assert db.current_revision(empty_database_url) == "0001"


def test_upgrade_twice_is_harmless(empty_database_url):
    db.upgrade(empty_database_url)
    db.upgrade(empty_database_url)
    assert db.current_revision(empty_database_url) == "0001"
