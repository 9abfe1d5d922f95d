-- When an account was closed, so that "nothing moved in or out after its closing" can be
-- checked against the ledger. Set by the closing UPDATE with clock_timestamp(), taken under the
-- account's row lock: every transfer that touched the account committed before it, and so began
-- (transfers.created_at) before it.
ALTER TABLE accounts ADD COLUMN closed_at timestamptz;
UPDATE accounts SET closed_at = now() WHERE status = 'closed';
ALTER TABLE accounts
    ADD CONSTRAINT accounts_closed_at_when_closed CHECK ((status = 'closed') = (closed_at IS NOT NULL));
