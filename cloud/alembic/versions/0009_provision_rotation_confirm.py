"""provisioning: a rotated login is pending until the gateway confirms it

Revision ID: 0009
Revises: 0006
Create Date: 2026-11-30 01:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("gateway_credentials", schema=None) as batch_op:
        batch_op.add_column(sa.Column("mac_key", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("confirmed_ms", sa.BigInteger(), nullable=True))
    # Logins issued before this revision were in use at once: confirmed when issued, with the
    # gateway's key for the active ones.
    op.execute("UPDATE gateway_credentials SET confirmed_ms = issued_ms")
    op.execute(
        "UPDATE gateway_credentials SET mac_key = (SELECT gateways.mac_key FROM gateways "
        "WHERE gateways.id = gateway_credentials.gateway_id) WHERE revoked_ms IS NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("gateway_credentials", schema=None) as batch_op:
        batch_op.drop_column("confirmed_ms")
        batch_op.drop_column("mac_key")
