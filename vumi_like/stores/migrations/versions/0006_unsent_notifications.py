"""Notifications stored and not yet known to be published (``unsent_notifications``),
so that those of a request whose API replica died before publishing them can be found.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "unsent_notifications",
        sa.Column("notification_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("notification_id", name="pk_unsent_notifications"),
    )
    op.create_index("ix_unsent_notifications_created_at", "unsent_notifications", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_unsent_notifications_created_at", table_name="unsent_notifications")
    op.drop_table("unsent_notifications")
