"""Conversations with vcita (seed 002): businesses and their VCS tokens, channels,
sessions and messages.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "vcita_businesses",
        sa.Column("tenant", sa.String(), nullable=False),
        sa.Column("business_uid", sa.String(), nullable=False),
        sa.Column("access_token", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "business_uid", name="pk_vcita_businesses"),
    )
    op.create_table(
        "vcita_channels",
        sa.Column("channel_id", sa.String(32), nullable=False),
        sa.Column("tenant", sa.String(), nullable=False),
        sa.Column("business_uid", sa.String(), nullable=False),
        sa.Column("channel_uid", sa.String(), nullable=True),
        sa.Column("channel_type", sa.String(16), nullable=False),
        sa.Column("transport_name", sa.String(), nullable=False),
        sa.Column("address", sa.String(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("channel_id", name="pk_vcita_channels"),
        sa.UniqueConstraint("channel_uid", name="uq_vcita_channels_channel_uid"),
        sa.UniqueConstraint(
            "tenant",
            "transport_name",
            "address",
            name="uq_vcita_channels_tenant_transport_name_address",
        ),
    )
    op.create_table(
        "vcita_sessions",
        sa.Column("session_id", sa.String(32), nullable=False),
        sa.Column("tenant", sa.String(), nullable=False),
        sa.Column("channel_id", sa.String(32), nullable=False),
        sa.Column("external_uid", sa.String(), nullable=False),
        sa.Column("session_uid", sa.String(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("staff_typing", sa.Boolean(), nullable=True),
        sa.Column("typing_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("session_id", name="pk_vcita_sessions"),
        sa.ForeignKeyConstraint(
            ["channel_id"],
            ["vcita_channels.channel_id"],
            name="fk_vcita_sessions_channel_id",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("session_uid", name="uq_vcita_sessions_session_uid"),
        sa.UniqueConstraint(
            "channel_id", "external_uid", name="uq_vcita_sessions_channel_id_external_uid"
        ),
    )
    op.create_table(
        "vcita_messages",
        sa.Column("message_id", sa.String(32), nullable=False),
        sa.Column("tenant", sa.String(), nullable=False),
        sa.Column("channel_id", sa.String(32), nullable=False),
        sa.Column("message_uid", sa.String(), nullable=False),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("external_uid", sa.String(), nullable=False),
        sa.Column("content", sa.Text(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reported_status", sa.String(16), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("message_id", name="pk_vcita_messages"),
        sa.UniqueConstraint(
            "channel_id", "message_uid", name="uq_vcita_messages_channel_id_message_uid"
        ),
    )


def downgrade() -> None:
    op.drop_table("vcita_messages")
    op.drop_table("vcita_sessions")
    op.drop_table("vcita_channels")
    op.drop_table("vcita_businesses")
