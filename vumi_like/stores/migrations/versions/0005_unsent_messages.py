"""Outbound messages stored and not yet known to be published (``unsent_messages``), so
that those of a request whose API replica died before publishing them can be found.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "unsent_messages",
        sa.Column("message_id", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("message_id", name="pk_unsent_messages"),
    )
    op.create_index("ix_unsent_messages_created_at", "unsent_messages", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_unsent_messages_created_at", table_name="unsent_messages")
    op.drop_table("unsent_messages")
