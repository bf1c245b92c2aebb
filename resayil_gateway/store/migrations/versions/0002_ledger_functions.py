"""PostgreSQL functions for the request path: reserve and settle, one round trip each

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25

The same rules as the Python path in ``resayil_gateway/billing/ledger.py`` (which SQLite uses); the ledger
property tests run against both, so the two cannot drift apart unnoticed.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

RESERVE = """
CREATE OR REPLACE FUNCTION resayil_reserve(
    p_id text, p_account bigint, p_key bigint, p_amount bigint, p_owner text, p_now timestamptz,
    p_lease timestamptz
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_account bigint;
BEGIN
    UPDATE balances b SET held = b.held + p_amount
     WHERE b.account_id = p_account
       AND (CASE WHEN b.plan_expires_at > p_now THEN b.plan_credits ELSE 0 END) + b.topup_credits - b.held >= p_amount
       AND EXISTS (SELECT 1 FROM accounts a WHERE a.id = p_account AND a.status = 'active')
       AND (p_key IS NULL OR EXISTS (SELECT 1 FROM api_keys k WHERE k.id = p_key AND k.revoked_at IS NULL))
    RETURNING b.account_id INTO v_account;
    IF v_account IS NULL THEN
        IF NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = p_account) THEN RETURN 'unknown'; END IF;
        IF EXISTS (SELECT 1 FROM accounts a WHERE a.id = p_account AND a.status <> 'active') THEN
            RETURN 'disabled';
        END IF;
        IF p_key IS NOT NULL AND NOT EXISTS (SELECT 1 FROM api_keys k WHERE k.id = p_key AND k.revoked_at IS NULL)
        THEN
            RETURN 'revoked';
        END IF;
        RETURN 'insufficient';
    END IF;
    INSERT INTO holds (id, account_id, key_id, amount, owner, created_at, lease_until)
    VALUES (p_id, p_account, p_key, p_amount, p_owner, p_now, p_lease);
    RETURN 'ok';
END $$;
"""

SETTLE = """
CREATE OR REPLACE FUNCTION resayil_settle(p_id text, p_cost bigint, p_now timestamptz, p_memo text)
RETURNS TABLE (
    o_account bigint, o_charged bigint, o_uncollected bigint, o_plan_delta bigint, o_topup_delta bigint,
    o_plan_after bigint, o_topup_after bigint, o_balance bigint, o_entry bigint
) LANGUAGE plpgsql AS $$
DECLARE
    h_account bigint; h_amount bigint;
    b_plan bigint; b_topup bigint; b_held bigint; b_expires timestamptz;
    v_usable bigint; v_charged bigint; v_plan bigint; v_entry bigint;
BEGIN
    DELETE FROM holds h WHERE h.id = p_id RETURNING h.account_id, h.amount INTO h_account, h_amount;
    IF h_account IS NULL THEN
        RETURN;
    END IF;
    SELECT b.plan_credits, b.topup_credits, b.held, b.plan_expires_at INTO b_plan, b_topup, b_held, b_expires
      FROM balances b WHERE b.account_id = h_account FOR UPDATE;
    v_usable := CASE WHEN b_expires > p_now THEN b_plan ELSE 0 END;
    v_charged := LEAST(p_cost, GREATEST(0, v_usable + b_topup - (b_held - h_amount)));
    v_plan := LEAST(v_charged, v_usable);
    UPDATE balances b SET held = b.held - h_amount, plan_credits = b.plan_credits - v_plan,
           topup_credits = b.topup_credits - (v_charged - v_plan)
     WHERE b.account_id = h_account;
    IF p_cost > 0 THEN
        INSERT INTO ledger (account_id, ref, reason, actor, plan_delta, topup_delta, uncollected, plan_after,
                            topup_after, memo, created_at)
        VALUES (h_account, 'req:' || p_id, 'request', 'api', -v_plan, -(v_charged - v_plan), p_cost - v_charged,
                b_plan - v_plan, b_topup - (v_charged - v_plan), p_memo, p_now)
        RETURNING id INTO v_entry;
    END IF;
    RETURN QUERY SELECT h_account, v_charged, p_cost - v_charged, -v_plan, -(v_charged - v_plan), b_plan - v_plan,
        b_topup - (v_charged - v_plan), (v_usable - v_plan) + (b_topup - (v_charged - v_plan)), v_entry;
END $$;
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(RESERVE)
    op.execute(SETTLE)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP FUNCTION IF EXISTS resayil_settle(text, bigint, timestamptz, text)")
    op.execute("DROP FUNCTION IF EXISTS resayil_reserve(text, bigint, bigint, bigint, text, timestamptz, timestamptz)")
