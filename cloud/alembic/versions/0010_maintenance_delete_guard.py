"""maintenance: the database refuses deleting a signed record within its retention period, and
any audit row, while the one-row guard maint_guard says enforce = 1

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 01:45:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Signed visits (and their items, attachments and defects) may only be deleted once their
# retention period is over, by the database's own clock: the sanctioned purge
# (DELETE /maint/visits/{id}) passes because the period has passed, not by turning the guard
# off. The audit trail refuses every delete. The guard row exists so that a tool that must
# wipe everything (the tests' fixture) can say so in its own transaction: enforce = 0, the
# deletes, enforce = 1. A missing guard row counts as enforce = 1.
MESSAGE = "maintenance record is retained"
ENFORCED = "COALESCE((SELECT enforce FROM maint_guard WHERE id = 1), 1) <> 0"
CHILDREN = {
    "maint_visit_items": "item",
    "maint_attachments": "attachment",
    "maint_defects": "defect",
}
# Trigger name -> table (the same names on both databases).
TRIGGER_TABLES = {
    "maint_visits_retained": "maint_visits",
    **{f"{table}_retained": table for table in CHILDREN},
    "maint_audit_no_delete": "maint_audit",
}
SQLITE_NOW = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"
PG_NOW = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"


def _sqlite_retained(visit: str) -> str:
    return (
        f"EXISTS (SELECT 1 FROM maint_visits v WHERE v.id = {visit} AND v.signed_ms IS NOT NULL"
        f" AND (v.retention_until_ms IS NULL OR v.retention_until_ms > {SQLITE_NOW}))"
    )


SQLITE_TRIGGERS = {
    "maint_visits_retained": f"""
        CREATE TRIGGER maint_visits_retained BEFORE DELETE ON maint_visits
        WHEN {ENFORCED} AND {_sqlite_retained("OLD.id")}
        BEGIN SELECT RAISE(ABORT, '{MESSAGE}: signed visit within its retention period'); END""",
    **{
        f"{table}_retained": f"""
        CREATE TRIGGER {table}_retained BEFORE DELETE ON {table}
        WHEN {ENFORCED} AND {_sqlite_retained("OLD.visit_id")}
        BEGIN SELECT RAISE(ABORT,
          '{MESSAGE}: {what} of a signed visit within its retention period'); END"""
        for table, what in CHILDREN.items()
    },
    "maint_audit_no_delete": f"""
        CREATE TRIGGER maint_audit_no_delete BEFORE DELETE ON maint_audit
        WHEN {ENFORCED}
        BEGIN SELECT RAISE(ABORT, '{MESSAGE}: audit trail is append-only'); END""",
}

PG_SQL = f"""
CREATE FUNCTION maint_guard_on() RETURNS boolean LANGUAGE sql STABLE AS $$
  SELECT {ENFORCED}
$$;
CREATE FUNCTION maint_retained(visit integer) RETURNS boolean LANGUAGE sql VOLATILE AS $$
  SELECT EXISTS (SELECT 1 FROM maint_visits v WHERE v.id = visit AND v.signed_ms IS NOT NULL
    AND (v.retention_until_ms IS NULL OR v.retention_until_ms > {PG_NOW}))
$$;
CREATE FUNCTION maint_refuse_delete() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  what text;
BEGIN
  IF NOT maint_guard_on() THEN
    RETURN OLD;
  END IF;
  IF TG_TABLE_NAME = 'maint_audit' THEN
    RAISE EXCEPTION '{MESSAGE}: audit trail is append-only'
      USING ERRCODE = 'integrity_constraint_violation';
  END IF;
  IF TG_TABLE_NAME = 'maint_visits' THEN
    IF maint_retained(OLD.id) THEN
      RAISE EXCEPTION '{MESSAGE}: signed visit within its retention period'
        USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN OLD;
  END IF;
  IF maint_retained(OLD.visit_id) THEN
    what := CASE TG_TABLE_NAME {" ".join(f"WHEN '{t}' THEN '{w}'" for t, w in CHILDREN.items())}
            END;
    RAISE EXCEPTION '{MESSAGE}: % of a signed visit within its retention period', what
      USING ERRCODE = 'integrity_constraint_violation';
  END IF;
  RETURN OLD;
END $$;
-- TRUNCATE skips row triggers: refused outright on these tables while the guard is on.
CREATE FUNCTION maint_refuse_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF maint_guard_on() THEN
    RAISE EXCEPTION '{MESSAGE}: TRUNCATE of %', TG_TABLE_NAME
      USING ERRCODE = 'integrity_constraint_violation';
  END IF;
  RETURN NULL;
END $$;
""" + "".join(
    f"CREATE TRIGGER {name} BEFORE DELETE ON {table}\n"
    "  FOR EACH ROW EXECUTE FUNCTION maint_refuse_delete();\n"
    f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}\n"
    "  FOR EACH STATEMENT EXECUTE FUNCTION maint_refuse_truncate();\n"
    for name, table in TRIGGER_TABLES.items()
)


def upgrade() -> None:
    op.create_table(
        "maint_guard",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("enforce", sa.Integer(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_maint_guard_single_row")),
        sa.CheckConstraint("enforce IN (0, 1)", name=op.f("ck_maint_guard_enforce")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_maint_guard")),
    )
    op.execute("INSERT INTO maint_guard (id, enforce) VALUES (1, 1)")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_SQL)
    else:
        for sql in SQLITE_TRIGGERS.values():
            op.execute(sql)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS maint_refuse_truncate() CASCADE")
        op.execute("DROP FUNCTION IF EXISTS maint_refuse_delete() CASCADE")
        op.execute("DROP FUNCTION IF EXISTS maint_retained(integer)")
        op.execute("DROP FUNCTION IF EXISTS maint_guard_on()")
    else:
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_table("maint_guard")
