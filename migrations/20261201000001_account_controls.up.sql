-- Account controls (SPEC §6): a status and an overdraft limit, both set by bankers.
--
-- The database holds the rules it can: a customer balance never goes below minus its limit, a
-- closed account holds nothing (so no money can land in one: the credit would break the check),
-- settlement accounts are never frozen, closed or limited, and closing is final.
ALTER TABLE accounts
    ADD COLUMN status text NOT NULL DEFAULT 'active',
    ADD COLUMN status_reason text,
    ADD COLUMN overdraft_limit bigint NOT NULL DEFAULT 0,
    ADD CONSTRAINT accounts_status_valid CHECK (status IN ('active', 'frozen', 'closed')),
    ADD CONSTRAINT accounts_overdraft_limit_nonnegative CHECK (overdraft_limit >= 0),
    ADD CONSTRAINT accounts_settlement_uncontrolled
        CHECK (kind = 'customer' OR (status = 'active' AND overdraft_limit = 0)),
    ADD CONSTRAINT accounts_closed_empty CHECK (status <> 'closed' OR balance = 0),
    DROP CONSTRAINT accounts_balance_nonnegative,
    ADD CONSTRAINT accounts_balance_within_limit
        CHECK (kind = 'settlement' OR balance >= -overdraft_limit);

CREATE FUNCTION accounts_closed_is_final() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status = 'closed' AND NEW.status <> 'closed' THEN
        RAISE EXCEPTION 'account % is closed, and closing is final', OLD.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'accounts_closed_is_final';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER accounts_closed_is_final
    BEFORE UPDATE OF status ON accounts
    FOR EACH ROW EXECUTE FUNCTION accounts_closed_is_final();
