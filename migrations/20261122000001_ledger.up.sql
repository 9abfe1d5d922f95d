-- The ledger: users, accounts, transfers and their double entries, plus sessions,
-- email verification and idempotency records (their logic arrives with later issues).
--
-- Every constraint is named: src/store/error.rs turns these names into domain errors,
-- so renaming one here means renaming it there (a test inserts bad rows for each).

-- Supported currencies and their minor-unit exponent (USD 2 = cents, JPY 0).
-- Mirrors `domain::Currency`; a test checks the two lists agree.
CREATE TABLE currencies (
    code     text     NOT NULL,
    exponent smallint NOT NULL,
    CONSTRAINT currencies_pkey PRIMARY KEY (code),
    CONSTRAINT currencies_code_format CHECK (code ~ '^[A-Z]{3}$'),
    CONSTRAINT currencies_exponent_range CHECK (exponent BETWEEN 0 AND 4)
);

INSERT INTO currencies (code, exponent) VALUES
    ('USD', 2), ('EUR', 2), ('CAD', 2), ('GBP', 2), ('JPY', 0), ('CHF', 2), ('AUD', 2);

CREATE TABLE users (
    username            text        NOT NULL,
    hashed_password     text        NOT NULL,
    full_name           text        NOT NULL,
    email               text        NOT NULL,
    role                text        NOT NULL DEFAULT 'depositor',
    is_email_verified   boolean     NOT NULL DEFAULT false,
    password_changed_at timestamptz NOT NULL DEFAULT '0001-01-01 00:00:00Z',
    created_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_pkey PRIMARY KEY (username),
    CONSTRAINT users_username_format CHECK (username ~ '^[a-z0-9_]{3,32}$'),
    CONSTRAINT users_full_name_length CHECK (char_length(full_name) BETWEEN 1 AND 100),
    CONSTRAINT users_email_format CHECK (email ~ '^[^@[:space:]]+@[^@[:space:]]+$'),
    CONSTRAINT users_role_valid CHECK (role IN ('depositor', 'banker'))
);

-- Case-insensitive uniqueness: "Ann@X.io" and "ann@x.io" are one mailbox.
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

-- `kind` separates customer accounts, which may never go below zero, from the bank's
-- per-currency settlement accounts, the counterparty of deposits and withdrawals.
CREATE TABLE accounts (
    id         bigint GENERATED ALWAYS AS IDENTITY,
    owner      text        NOT NULL,
    currency   text        NOT NULL,
    balance    bigint      NOT NULL DEFAULT 0,
    kind       text        NOT NULL DEFAULT 'customer',
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT accounts_pkey PRIMARY KEY (id),
    CONSTRAINT accounts_owner_fkey FOREIGN KEY (owner) REFERENCES users (username),
    CONSTRAINT accounts_currency_fkey FOREIGN KEY (currency) REFERENCES currencies (code),
    CONSTRAINT accounts_kind_valid CHECK (kind IN ('customer', 'settlement')),
    CONSTRAINT accounts_balance_nonnegative CHECK (kind = 'settlement' OR balance >= 0),
    -- Also serves "list the accounts of an owner": a user has at most one per currency.
    CONSTRAINT accounts_owner_currency_key UNIQUE (owner, currency)
);

CREATE TABLE transfers (
    id              bigint GENERATED ALWAYS AS IDENTITY,
    from_account_id bigint      NOT NULL,
    to_account_id   bigint      NOT NULL,
    amount          bigint      NOT NULL,
    currency        text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT transfers_pkey PRIMARY KEY (id),
    CONSTRAINT transfers_from_account_fkey FOREIGN KEY (from_account_id) REFERENCES accounts (id),
    CONSTRAINT transfers_to_account_fkey FOREIGN KEY (to_account_id) REFERENCES accounts (id),
    CONSTRAINT transfers_currency_fkey FOREIGN KEY (currency) REFERENCES currencies (code),
    CONSTRAINT transfers_amount_positive CHECK (amount > 0),
    CONSTRAINT transfers_distinct_accounts CHECK (from_account_id <> to_account_id)
);
-- No indexes on from/to_account_id: no query filters on them (statements read `entries`),
-- and accounts are never deleted, so the foreign keys never need to search transfers.

CREATE TABLE entries (
    id            bigint GENERATED ALWAYS AS IDENTITY,
    account_id    bigint      NOT NULL,
    transfer_id   bigint      NOT NULL,
    amount        bigint      NOT NULL,
    balance_after bigint      NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT entries_pkey PRIMARY KEY (id),
    CONSTRAINT entries_account_fkey FOREIGN KEY (account_id) REFERENCES accounts (id),
    CONSTRAINT entries_transfer_fkey FOREIGN KEY (transfer_id) REFERENCES transfers (id),
    CONSTRAINT entries_amount_nonzero CHECK (amount <> 0),
    -- One entry per account per transfer.
    CONSTRAINT entries_transfer_account_key UNIQUE (transfer_id, account_id)
);
-- The account statement: newest first, keyset on id.
CREATE INDEX entries_account_id_idx ON entries (account_id, id);

CREATE TABLE sessions (
    id                 uuid        NOT NULL,
    username           text        NOT NULL,
    refresh_token_hash bytea       NOT NULL,
    user_agent         text        NOT NULL DEFAULT '',
    client_ip          text        NOT NULL DEFAULT '',
    is_blocked         boolean     NOT NULL DEFAULT false,
    expires_at         timestamptz NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT sessions_pkey PRIMARY KEY (id),
    CONSTRAINT sessions_username_fkey FOREIGN KEY (username) REFERENCES users (username)
);
-- Revoking every session of a user (logout everywhere, password change).
CREATE INDEX sessions_username_idx ON sessions (username);

CREATE TABLE verify_emails (
    id          bigint GENERATED ALWAYS AS IDENTITY,
    username    text        NOT NULL,
    email       text        NOT NULL,
    secret_code text        NOT NULL,
    is_used     boolean     NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expired_at  timestamptz NOT NULL DEFAULT now() + interval '15 minutes',
    CONSTRAINT verify_emails_pkey PRIMARY KEY (id),
    CONSTRAINT verify_emails_username_fkey FOREIGN KEY (username) REFERENCES users (username)
);
CREATE INDEX verify_emails_username_idx ON verify_emails (username);

-- Idempotency records: the first response to a keyed write, replayed on retries.
-- The key is scoped per user; `request_hash` tells a retry from a different request.
CREATE TABLE idempotency_keys (
    username        text        NOT NULL,
    key             text        NOT NULL,
    request_hash    bytea       NOT NULL,
    response_status smallint,
    response_body   bytea,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (username, key),
    CONSTRAINT idempotency_keys_username_fkey FOREIGN KEY (username) REFERENCES users (username),
    CONSTRAINT idempotency_keys_key_length CHECK (char_length(key) BETWEEN 1 AND 255),
    -- Either still in flight (no response yet) or complete (both parts present).
    CONSTRAINT idempotency_keys_response_complete
        CHECK ((response_status IS NULL) = (response_body IS NULL))
);
-- The purge of records past their retention scans by age.
CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);

-- The bank itself: owner of one settlement account per currency. Its password hash is
-- not a valid PHC string, so no password can ever log in as it.
INSERT INTO users (username, hashed_password, full_name, email, role)
VALUES ('simplebank', '!', 'simplebank settlement', 'settlement@simplebank.invalid', 'depositor');

INSERT INTO accounts (owner, currency, kind)
SELECT 'simplebank', code, 'settlement' FROM currencies ORDER BY code;
