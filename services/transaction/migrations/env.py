"""Alembic's environment for the transaction service's database (see migrate.py): the URL
comes from the caller's config (`attributes["url"]`), the metadata from schema.py."""
from alembic import context

from services.transaction import schema
from services.transaction.migrate import sqlalchemy_engine

config = context.config
engine = sqlalchemy_engine(config.attributes["url"])
try:
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=schema.metadata,
                          render_as_batch=connection.dialect.name == "sqlite",
                          transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
finally:
    engine.dispose()
