"""The schema of the last release before migrations (services/transaction/schema.py as it
stood then): revision 1.

Run on an empty database it creates every table. Run on a file of that release or an older
one (no version table) it creates only the tables such a file lacks and adds the two
columns added since (what the release's start-up `_upgrade` did), so every row stays.

When a later revision changes a table, freeze this one first: replace `create_all` on the
live metadata by that revision's table definitions as they are now.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

from services.transaction import schema

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    schema.metadata.create_all(bind, checkfirst=True)
    inspector = sa.inspect(bind)
    for table, column in (("inbox", "event_id"), ("subscriptions", "hs_token")):
        if column not in {c["name"] for c in inspector.get_columns(table)}:
            op.add_column(table, sa.Column(column, schema.TEXT))   # NULL: made before it


def downgrade() -> None:
    schema.metadata.drop_all(op.get_bind())
