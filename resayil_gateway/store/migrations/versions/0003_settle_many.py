"""PostgreSQL: settle a batch of holds in one call

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25

Settling is off the response path, so the gateway gathers the settles of a few milliseconds and sends them
together: one round trip and one transaction for many requests. Each item applies ``resayil_settle``'s rules
unchanged. Callers order a batch by account so that two batches never lock balances in opposite orders.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

SETTLE_MANY = """
CREATE OR REPLACE FUNCTION resayil_settle_many(p_ids text[], p_costs bigint[], p_now timestamptz, p_memos text[])
RETURNS TABLE (
    o_id text, o_account bigint, o_charged bigint, o_uncollected bigint, o_plan_delta bigint,
    o_topup_delta bigint, o_plan_after bigint, o_topup_after bigint, o_balance bigint, o_entry bigint
) LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_ids, 1), 0) LOOP
        RETURN QUERY SELECT p_ids[i], s.* FROM resayil_settle(p_ids[i], p_costs[i], p_now, p_memos[i]) s;
    END LOOP;
END $$;
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(SETTLE_MANY)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP FUNCTION IF EXISTS resayil_settle_many(text[], bigint[], timestamptz, text[])")
