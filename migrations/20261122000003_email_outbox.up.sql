-- Email verification without a message broker: the verification record and the email that
-- carries its code are written in the transaction that creates (or re-addresses) the user, and
-- an in-process worker delivers the email from this outbox.

-- Only a SHA-256 of the code is kept for checking it: a copy of the database cannot verify
-- anyone's address. The plain code lives in the outbox row until the email is sent.
ALTER TABLE verify_emails RENAME COLUMN secret_code TO secret_code_hash;
ALTER TABLE verify_emails
    ADD CONSTRAINT verify_emails_secret_code_hash_sha256
        CHECK (secret_code_hash ~ '^[0-9a-f]{64}$');

CREATE TABLE email_outbox (
    id              bigint GENERATED ALWAYS AS IDENTITY,
    verify_email_id bigint      NOT NULL,
    -- The code to send; cleared once the email is sent or given up.
    secret_code     text,
    -- How many times a worker has claimed it.
    attempts        integer     NOT NULL DEFAULT 0,
    -- When a worker may (next) claim it. A claim moves it forward by the lease, so another
    -- worker cannot pick the row up while the first is sending; a crashed worker's row comes
    -- back when its lease runs out.
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    sent_at         timestamptz,
    -- Given up: too many failures, or the code expired before it could be delivered.
    abandoned_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT email_outbox_pkey PRIMARY KEY (id),
    CONSTRAINT email_outbox_verify_email_fkey
        FOREIGN KEY (verify_email_id) REFERENCES verify_emails (id),
    CONSTRAINT email_outbox_attempts_nonnegative CHECK (attempts >= 0),
    CONSTRAINT email_outbox_settled_once CHECK (sent_at IS NULL OR abandoned_at IS NULL),
    CONSTRAINT email_outbox_code_until_settled
        CHECK ((secret_code IS NULL) = (sent_at IS NOT NULL OR abandoned_at IS NOT NULL))
);
-- What the workers poll: only the pending rows, oldest due first.
CREATE INDEX email_outbox_due_idx ON email_outbox (next_attempt_at)
    WHERE sent_at IS NULL AND abandoned_at IS NULL;
