"""What a request under an Idempotency-Key stored can be found again: each claim has an
id (``idempotency_keys.claim_id``), from which the request's message ids are derived,
and a notification records the id its request gave it (``notifications.request_id``).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("idempotency_keys") as table:
        table.add_column(sa.Column("claim_id", sa.String(32), nullable=True))
    with op.batch_alter_table("notifications") as table:
        table.add_column(sa.Column("request_id", sa.String(32), nullable=True))
    op.create_index(
        "ix_notifications_request", "notifications", ["tenant", "request_id"], unique=True
    )


def downgrade() -> None:
    op.drop_index("ix_notifications_request", table_name="notifications")
    with op.batch_alter_table("notifications") as table:
        table.drop_column("request_id")
    with op.batch_alter_table("idempotency_keys") as table:
        table.drop_column("claim_id")
