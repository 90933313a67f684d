"""alarms: restart reconciliation (awaiting a re-raise after a gateway's new boot)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 23:35:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("alarms", schema=None) as batch_op:
        batch_op.add_column(sa.Column("active_boot", sa.BigInteger(), nullable=True))
        # server defaults only to fill the rows that exist; the models give the values
        batch_op.add_column(
            sa.Column("latched", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("confirm_boot", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("confirm_by_ms", sa.BigInteger(), nullable=True))
        batch_op.add_column(
            sa.Column("needs_reset", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("note", sa.String(length=300), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_alarms_confirm_by_ms"), ["confirm_by_ms"], unique=False
        )
    # An open alarm's newest active report is at least the one that raised it.
    op.execute("UPDATE alarms SET active_boot = boot")
    with op.batch_alter_table("alarms", schema=None) as batch_op:
        batch_op.alter_column("latched", server_default=None)
        batch_op.alter_column("needs_reset", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("alarms", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alarms_confirm_by_ms"))
        batch_op.drop_column("note")
        batch_op.drop_column("needs_reset")
        batch_op.drop_column("confirm_by_ms")
        batch_op.drop_column("confirm_boot")
        batch_op.drop_column("latched")
        batch_op.drop_column("active_boot")
