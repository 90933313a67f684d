"""device health hysteresis: a recovery waits for the dwell time (pending status + sweep)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 20:05:40.739401
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("device_health", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pending_status", sa.String(length=10), nullable=True))
        batch_op.add_column(sa.Column("pending_reason", sa.String(length=300), nullable=True))
        batch_op.add_column(sa.Column("next_check_ms", sa.BigInteger(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_device_health_next_check_ms"), ["next_check_ms"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("device_health", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_device_health_next_check_ms"))
        batch_op.drop_column("next_check_ms")
        batch_op.drop_column("pending_reason")
        batch_op.drop_column("pending_status")
