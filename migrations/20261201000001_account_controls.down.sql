DROP TRIGGER accounts_closed_is_final ON accounts;
DROP FUNCTION accounts_closed_is_final();

-- Overdrawn accounts cannot go back under the old rule; the down migration refuses rather than
-- rewrite balances.
ALTER TABLE accounts
    DROP CONSTRAINT accounts_balance_within_limit,
    ADD CONSTRAINT accounts_balance_nonnegative CHECK (kind = 'settlement' OR balance >= 0),
    DROP CONSTRAINT accounts_closed_empty,
    DROP CONSTRAINT accounts_settlement_uncontrolled,
    DROP CONSTRAINT accounts_overdraft_limit_nonnegative,
    DROP CONSTRAINT accounts_status_valid,
    DROP COLUMN overdraft_limit,
    DROP COLUMN status_reason,
    DROP COLUMN status;
