-- Reversals (SPEC §6): a new transfer back, naming the one it reverses. The original is never
-- modified; the unique key makes at most one reversal per transfer, whatever races.
ALTER TABLE transfers
    ADD COLUMN reverses_transfer_id bigint,
    ADD CONSTRAINT transfers_reverses_fkey
        FOREIGN KEY (reverses_transfer_id) REFERENCES transfers (id),
    ADD CONSTRAINT transfers_reverses_key UNIQUE (reverses_transfer_id),
    ADD CONSTRAINT transfers_reverses_another CHECK (reverses_transfer_id <> id);

ALTER TABLE idempotency_keys
    DROP CONSTRAINT idempotency_keys_operation_known,
    ADD CONSTRAINT idempotency_keys_operation_known
        CHECK (operation IN ('transfer', 'deposit', 'withdrawal', 'hold', 'capture', 'void',
                             'status', 'overdraft_limit', 'reversal'));
