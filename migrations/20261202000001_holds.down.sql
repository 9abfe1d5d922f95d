-- Records of hold writes cannot be kept under the old shape.
DELETE FROM idempotency_keys
    WHERE operation IN ('hold', 'capture', 'void', 'status', 'overdraft_limit');
ALTER TABLE idempotency_keys
    DROP CONSTRAINT idempotency_keys_one_outcome,
    ADD CONSTRAINT idempotency_keys_one_outcome
        CHECK ((transfer_id IS NULL) <> (refusal IS NULL)),
    DROP CONSTRAINT idempotency_keys_operation_known,
    ADD CONSTRAINT idempotency_keys_operation_known
        CHECK (operation IN ('transfer', 'deposit', 'withdrawal')),
    DROP CONSTRAINT idempotency_keys_account_fkey,
    DROP CONSTRAINT idempotency_keys_hold_fkey,
    DROP COLUMN refusal_detail,
    DROP COLUMN account_id,
    DROP COLUMN hold_id;
DROP FUNCTION account_held(bigint);
ALTER TABLE transfers
    DROP CONSTRAINT transfers_hold_key,
    DROP CONSTRAINT transfers_hold_fkey,
    DROP COLUMN hold_id;
ALTER TABLE accounts
    DROP CONSTRAINT accounts_closed_without_holds,
    DROP CONSTRAINT accounts_holds_pending_nonnegative,
    DROP COLUMN holds_pending;
DROP TABLE holds;
