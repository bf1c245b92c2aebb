"""Outbox delivery: one row per recipient, the channel that sent it, the provider's id and a lease

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

A worker marks a row ``sending`` with ``lease_until``; a row whose lease ran out (its worker died mid-send)
is claimed again. ``recipient`` is the E.164 phone the message goes to; ``provider_id`` is the provider's
message id once it accepted the message.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("recipient", sa.String(length=40), server_default="", nullable=False))
        batch_op.add_column(sa.Column("channel", sa.String(length=50), nullable=True))
        batch_op.add_column(sa.Column("provider_id", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_outbox_created_at", ["created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_created_at")
        batch_op.drop_column("lease_until")
        batch_op.drop_column("provider_id")
        batch_op.drop_column("channel")
        batch_op.drop_column("recipient")
