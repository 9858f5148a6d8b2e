"""Notifications to users, forms and projects: the registry of users, targets and their
members, and the notifications themselves.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _json() -> sa.JSON:
    return sa.JSON(none_as_null=True)


def upgrade() -> None:
    op.create_table(
        "notification_users",
        sa.Column("tenant", sa.String(), nullable=False),
        sa.Column("username", sa.String(), nullable=False),
        sa.Column("real_name", sa.String(), nullable=False),
        sa.Column("client_id", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "username", name="pk_notification_users"),
        sa.UniqueConstraint("client_id", name="uq_notification_users_client_id"),
    )
    op.create_table(
        "notification_targets",
        sa.Column("tenant", sa.String(), nullable=False),
        sa.Column("target_type", sa.String(16), nullable=False),
        sa.Column("target_id", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("form_id", sa.String(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant", "target_type", "target_id", name="pk_notification_targets"
        ),
    )
    op.create_table(
        "notification_members",
        sa.Column("tenant", sa.String(), nullable=False),
        sa.Column("target_type", sa.String(16), nullable=False),
        sa.Column("target_id", sa.String(), nullable=False),
        sa.Column("username", sa.String(), nullable=False),
        sa.Column("permission", sa.String(8), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant", "target_type", "target_id", "username", name="pk_notification_members"
        ),
        sa.ForeignKeyConstraint(
            ["tenant", "target_type", "target_id"],
            [
                "notification_targets.tenant",
                "notification_targets.target_type",
                "notification_targets.target_id",
            ],
            name="fk_notification_members_tenant",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(), nullable=False),
        sa.Column("target_type", sa.String(16), nullable=False),
        sa.Column("target_id", sa.String(), nullable=False),
        sa.Column("author", sa.String(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("payload", _json(), nullable=False),
        sa.Column("deliveries", _json(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_notifications"),
    )
    op.create_index(
        "ix_notifications_target",
        "notifications",
        ["tenant", "target_type", "target_id", "id"],
    )


def downgrade() -> None:
    op.drop_index("ix_notifications_target", table_name="notifications")
    op.drop_table("notifications")
    op.drop_table("notification_members")
    op.drop_table("notification_targets")
    op.drop_table("notification_users")
