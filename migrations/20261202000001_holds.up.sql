-- Holds (SPEC §6): money the payer has authorised and the payee may capture, in all or in part,
-- or release. A hold moves nothing; it lowers the payer's available balance until it is
-- resolved or expires.
--
-- `held` (the sum of an account's pending, unexpired holds) depends on the clock, so no CHECK can
-- hold `held <= balance + overdraft_limit`: the rules hold it, under the payer's row lock, on
-- every debit (store/rules.rs). What the database can hold, it does: amounts, states and their
-- timestamps agree, a captured hold has exactly one transfer, and `accounts.holds_pending` (the
-- sum of the payer's holds still marked pending, expired or not) never goes negative.
CREATE TABLE holds (
    id              bigint GENERATED ALWAYS AS IDENTITY,
    from_account_id bigint      NOT NULL,
    to_account_id   bigint      NOT NULL,
    amount          bigint      NOT NULL,
    currency        text        NOT NULL,
    status          text        NOT NULL DEFAULT 'pending',
    captured_amount bigint,
    expires_at      timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    resolved_at     timestamptz,
    reference       text,
    metadata        jsonb,
    CONSTRAINT holds_pkey PRIMARY KEY (id),
    CONSTRAINT holds_from_account_fkey FOREIGN KEY (from_account_id) REFERENCES accounts (id),
    CONSTRAINT holds_to_account_fkey FOREIGN KEY (to_account_id) REFERENCES accounts (id),
    CONSTRAINT holds_currency_fkey FOREIGN KEY (currency) REFERENCES currencies (code),
    CONSTRAINT holds_amount_positive CHECK (amount > 0),
    CONSTRAINT holds_distinct_accounts CHECK (from_account_id <> to_account_id),
    CONSTRAINT holds_status_valid CHECK (status IN ('pending', 'captured', 'voided', 'expired')),
    CONSTRAINT holds_captured_amount_valid CHECK (
        (status = 'captured') = (captured_amount IS NOT NULL)
        AND (captured_amount IS NULL OR captured_amount BETWEEN 1 AND amount)),
    CONSTRAINT holds_resolved_when_final CHECK ((status = 'pending') = (resolved_at IS NULL)),
    CONSTRAINT holds_expiry_after_creation CHECK (expires_at > created_at),
    CONSTRAINT holds_reference_format CHECK (reference ~ '^[\x20-\x7e]{1,64}$'),
    CONSTRAINT holds_metadata_object CHECK (jsonb_typeof(metadata) = 'object')
);

-- An account's holds, newest first, as payer or as payee (`GET /v1/accounts/{id}/holds`).
CREATE INDEX holds_from_account_idx ON holds (from_account_id, id);
CREATE INDEX holds_to_account_idx ON holds (to_account_id, id);
-- The sweep's work list: pending holds by expiry.
CREATE INDEX holds_pending_expiry_idx ON holds (expires_at) WHERE status = 'pending';
-- `account_held`: the payer's pending holds only, however many it has resolved.
CREATE INDEX holds_pending_payer_idx ON holds (from_account_id) WHERE status = 'pending';

ALTER TABLE accounts
    ADD COLUMN holds_pending bigint NOT NULL DEFAULT 0,
    ADD CONSTRAINT accounts_holds_pending_nonnegative CHECK (holds_pending >= 0),
    -- Closing is final, so a closed account may not still owe a capture.
    ADD CONSTRAINT accounts_closed_without_holds CHECK (status <> 'closed' OR holds_pending = 0);

-- A capture is one ordinary transfer that names its hold; the unique key makes it at most one.
ALTER TABLE transfers
    ADD COLUMN hold_id bigint,
    ADD CONSTRAINT transfers_hold_fkey FOREIGN KEY (hold_id) REFERENCES holds (id),
    ADD CONSTRAINT transfers_hold_key UNIQUE (hold_id);

-- What an account's pending, unexpired holds reserve. VOLATILE on purpose: under READ COMMITTED
-- a volatile function takes a fresh snapshot for its query, so called after a statement has
-- taken the account's row lock it sees every hold committed by whoever held that lock before —
-- where a subquery of the same statement would still read the statement's older snapshot, and
-- two holds racing for the last euro could both pass.
CREATE FUNCTION account_held(account bigint) RETURNS bigint
    LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN (SELECT COALESCE(sum(amount), 0)::bigint FROM holds
            WHERE from_account_id = account AND status = 'pending' AND expires_at > now());
END;
$$;

-- Hold writes and the bankers' account controls take idempotency keys too (SPEC §6). A record
-- names the hold it placed, captured or voided (and, for a capture, its transfer), or the
-- account it changed, or the refusal, with what the refusal needs to be told again
-- (`refusal_detail`: an account id, a hold's status, an amount).
ALTER TABLE idempotency_keys
    ADD COLUMN hold_id bigint,
    ADD COLUMN account_id bigint,
    ADD COLUMN refusal_detail text,
    ADD CONSTRAINT idempotency_keys_hold_fkey FOREIGN KEY (hold_id) REFERENCES holds (id),
    ADD CONSTRAINT idempotency_keys_account_fkey FOREIGN KEY (account_id) REFERENCES accounts (id),
    DROP CONSTRAINT idempotency_keys_operation_known,
    ADD CONSTRAINT idempotency_keys_operation_known
        CHECK (operation IN ('transfer', 'deposit', 'withdrawal', 'hold', 'capture', 'void',
                             'status', 'overdraft_limit')),
    DROP CONSTRAINT idempotency_keys_one_outcome,
    ADD CONSTRAINT idempotency_keys_one_outcome
        CHECK ((refusal IS NULL)
               = (transfer_id IS NOT NULL OR hold_id IS NOT NULL OR account_id IS NOT NULL));
