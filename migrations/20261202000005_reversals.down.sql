DELETE FROM idempotency_keys WHERE operation = 'reversal';
ALTER TABLE idempotency_keys
    DROP CONSTRAINT idempotency_keys_operation_known,
    ADD CONSTRAINT idempotency_keys_operation_known
        CHECK (operation IN ('transfer', 'deposit', 'withdrawal', 'hold', 'capture', 'void',
                             'status', 'overdraft_limit'));
ALTER TABLE transfers
    DROP CONSTRAINT transfers_reverses_another,
    DROP CONSTRAINT transfers_reverses_key,
    DROP CONSTRAINT transfers_reverses_fkey,
    DROP COLUMN reverses_transfer_id;
