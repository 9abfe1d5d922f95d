-- Idempotency records store the outcome of the first request, not a rendered response: the
-- transfer it made (re-read to answer a retry: transfers and entries never change, and an
-- entry's balance_after is the account's balance right after it) or the rule that refused it.
-- Either transport renders the outcome the same way the first answer was rendered.
--
-- A record is written in the same transaction as the transfer it names, so it never exists
-- without its outcome: "still running" is not a row state but a held advisory lock.
ALTER TABLE idempotency_keys
    DROP CONSTRAINT idempotency_keys_response_complete,
    DROP COLUMN response_status,
    DROP COLUMN response_body,
    ADD COLUMN operation text NOT NULL,
    ADD COLUMN transfer_id bigint,
    ADD COLUMN refusal text,
    ADD COLUMN refusal_currency text,
    ADD CONSTRAINT idempotency_keys_operation_known
        CHECK (operation IN ('transfer', 'deposit', 'withdrawal')),
    ADD CONSTRAINT idempotency_keys_transfer_fkey
        FOREIGN KEY (transfer_id) REFERENCES transfers (id),
    ADD CONSTRAINT idempotency_keys_one_outcome
        CHECK ((transfer_id IS NULL) <> (refusal IS NULL)),
    ADD CONSTRAINT idempotency_keys_request_hash_sha256
        CHECK (octet_length(request_hash) = 32);
