"""Alembic environment: runs migrations on the connection server.db.upgrade passes in."""

from alembic import context

from server.models import Base

target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        from server.db import create_engine

        engine = create_engine(context.config.get_main_option("sqlalchemy.url"))
        with engine.begin() as connection:
            context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
            context.run_migrations()
        engine.dispose()
        return

    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run 'sshca db upgrade' against a database")
run_migrations_online()
