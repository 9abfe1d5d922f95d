-- Events (SPEC §7): every committed change a client may react to, written by triggers in the
-- transaction of the change itself (the outbox pattern). No code path can move money, change a
-- hold, an account's status or a user's verification without its event, and a batch of
-- transfers (one INSERT of many rows) writes its events with one INSERT of many rows, from the
-- statement trigger's transition table: no round trip per event.
--
-- `id` is global and increasing, but identities are handed out before commit, so ids become
-- visible out of order (transaction 2 may commit before transaction 1). Readers therefore only
-- read up to a *horizon* below which every id is final (committed or never to be); see
-- store/events.rs. That needs every id to be drawn by a transaction that already has an xid,
-- which holds because events are only ever inserted by these triggers, after the write that
-- fired them.
CREATE TABLE events (
    id                 bigint      GENERATED ALWAYS AS IDENTITY,
    type               text        NOT NULL,
    -- The accounts it concerns, for watching one account: the payer (or the account itself)
    -- and the payee. NULL for user events.
    account_id         bigint,
    counter_account_id bigint,
    -- The resource as the API shows it to a banker, at the moment of the change.
    data               jsonb       NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_pkey PRIMARY KEY (id),
    CONSTRAINT events_type_valid CHECK (type IN (
        'transfer.created', 'deposit.created', 'withdrawal.created', 'hold.created',
        'hold.captured', 'hold.voided', 'hold.expired', 'transfer.reversed', 'account.created',
        'account.status_changed', 'user.email_verified')),
    CONSTRAINT events_data_object CHECK (jsonb_typeof(data) = 'object')
);
-- An account's events in id order (`GET /v1/accounts/{id}/events`, `WatchAccount`).
CREATE INDEX events_account_idx ON events (account_id, id) WHERE account_id IS NOT NULL;
CREATE INDEX events_counter_account_idx ON events (counter_account_id, id)
    WHERE counter_account_id IS NOT NULL;

-- Timestamps as the API writes them: RFC 3339, UTC, microseconds.
CREATE FUNCTION event_time(t timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') $$;

-- The API's TransferView, HoldView, AccountView and UserView (http/dto.rs): absent optional
-- fields are left out, as the API leaves them out.
CREATE FUNCTION transfer_view(t transfers) RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
SELECT jsonb_strip_nulls(jsonb_build_object(
    'id', t.id, 'from_account_id', t.from_account_id, 'to_account_id', t.to_account_id,
    'amount', t.amount, 'currency', t.currency, 'hold_id', t.hold_id,
    'reference', t.reference, 'metadata', t.metadata,
    'reverses_transfer_id', t.reverses_transfer_id, 'created_at', event_time(t.created_at)))
$$;

CREATE FUNCTION hold_view(h holds) RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
SELECT jsonb_strip_nulls(jsonb_build_object(
    'id', h.id, 'from_account_id', h.from_account_id, 'to_account_id', h.to_account_id,
    'amount', h.amount, 'currency', h.currency, 'status', h.status,
    'captured_amount', h.captured_amount, 'expires_at', event_time(h.expires_at),
    'created_at', event_time(h.created_at), 'resolved_at', event_time(h.resolved_at),
    'reference', h.reference, 'metadata', h.metadata))
$$;

CREATE FUNCTION account_view(a accounts) RETURNS jsonb
LANGUAGE sql VOLATILE
AS $$
SELECT jsonb_build_object(
    'id', a.id, 'owner', a.owner, 'currency', a.currency, 'balance', a.balance,
    'status', a.status, 'overdraft_limit', a.overdraft_limit,
    'available_balance', a.balance
        - CASE WHEN a.holds_pending > 0 THEN account_held(a.id) ELSE 0 END,
    'created_at', event_time(a.created_at))
$$;

CREATE FUNCTION events_for_transfers() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO events (type, account_id, counter_account_id, data, created_at)
    SELECT CASE WHEN n.reverses_transfer_id IS NOT NULL THEN 'transfer.reversed'
                WHEN f.kind <> 'customer' THEN 'deposit.created'
                WHEN t.kind <> 'customer' THEN 'withdrawal.created'
                ELSE 'transfer.created' END,
           n.from_account_id, n.to_account_id, transfer_view(n), n.created_at
    FROM new_transfers n
    JOIN accounts f ON f.id = n.from_account_id
    JOIN accounts t ON t.id = n.to_account_id
    ORDER BY n.id;
    RETURN NULL;
END
$$;
CREATE TRIGGER transfers_events AFTER INSERT ON transfers
    REFERENCING NEW TABLE AS new_transfers
    FOR EACH STATEMENT EXECUTE FUNCTION events_for_transfers();

CREATE FUNCTION events_for_holds() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO events (type, account_id, counter_account_id, data)
    VALUES (CASE WHEN TG_OP = 'INSERT' THEN 'hold.created' ELSE 'hold.' || NEW.status END,
            NEW.from_account_id, NEW.to_account_id, hold_view(NEW));
    RETURN NULL;
END
$$;
CREATE TRIGGER holds_created_event AFTER INSERT ON holds
    FOR EACH ROW EXECUTE FUNCTION events_for_holds();
CREATE TRIGGER holds_resolved_event AFTER UPDATE OF status ON holds
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION events_for_holds();

CREATE FUNCTION events_for_accounts() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO events (type, account_id, data)
    VALUES (CASE WHEN TG_OP = 'INSERT' THEN 'account.created' ELSE 'account.status_changed' END,
            NEW.id, account_view(NEW));
    RETURN NULL;
END
$$;
-- The settlement accounts are the bank's own: no events of their creation.
CREATE TRIGGER accounts_created_event AFTER INSERT ON accounts
    FOR EACH ROW WHEN (NEW.kind = 'customer')
    EXECUTE FUNCTION events_for_accounts();
CREATE TRIGGER accounts_status_event AFTER UPDATE OF status ON accounts
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION events_for_accounts();

CREATE FUNCTION events_for_users() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO events (type, data)
    VALUES ('user.email_verified', jsonb_build_object(
        'username', NEW.username, 'full_name', NEW.full_name, 'email', NEW.email,
        'role', NEW.role, 'is_email_verified', NEW.is_email_verified,
        'password_changed_at', event_time(NEW.password_changed_at),
        'created_at', event_time(NEW.created_at)));
    RETURN NULL;
END
$$;
CREATE TRIGGER users_verified_event AFTER UPDATE OF is_email_verified ON users
    FOR EACH ROW WHEN (NOT OLD.is_email_verified AND NEW.is_email_verified)
    EXECUTE FUNCTION events_for_users();

-- Webhook endpoints (bankers manage them). The signing secret is not stored: it is derived
-- from `secret_salt` and the server's WEBHOOK_SECRET_KEY (HMAC-SHA256), so a dump of the
-- database alone cannot sign for any endpoint. During a rotation the previous salt still signs
-- (a second signature) until `previous_secret_expires_at`.
CREATE TABLE webhook_endpoints (
    id                         bigint      GENERATED ALWAYS AS IDENTITY,
    url                        text        NOT NULL,
    -- Empty: every type.
    event_types                text[]      NOT NULL,
    description                text        NOT NULL DEFAULT '',
    secret_salt                bytea       NOT NULL,
    previous_secret_salt       bytea,
    previous_secret_expires_at timestamptz,
    created_by                 text        NOT NULL,
    -- Only events after this id are sent: the last id handed out when it was created.
    after_event_id             bigint      NOT NULL,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    deleted_at                 timestamptz,
    CONSTRAINT webhook_endpoints_pkey PRIMARY KEY (id),
    CONSTRAINT webhook_endpoints_created_by_fkey
        FOREIGN KEY (created_by) REFERENCES users (username),
    CONSTRAINT webhook_endpoints_url_length CHECK (length(url) BETWEEN 8 AND 2048),
    CONSTRAINT webhook_endpoints_url_http CHECK (url ~ '^https?://'),
    CONSTRAINT webhook_endpoints_description_length CHECK (length(description) <= 256),
    CONSTRAINT webhook_endpoints_salt_length CHECK (length(secret_salt) = 32),
    CONSTRAINT webhook_endpoints_previous_salt CHECK (
        (previous_secret_salt IS NULL) = (previous_secret_expires_at IS NULL))
);
CREATE INDEX webhook_endpoints_live_idx ON webhook_endpoints (id) WHERE deleted_at IS NULL;

-- One event to one endpoint: the webhook outbox. Claimed like `email_outbox`
-- (FOR UPDATE SKIP LOCKED, then a lease); `attempts` counts claims, and a worker settles only
-- the attempt it claimed.
CREATE TABLE webhook_deliveries (
    id              bigint      GENERATED ALWAYS AS IDENTITY,
    endpoint_id     bigint      NOT NULL,
    event_id        bigint      NOT NULL,
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    failed_at       timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_deliveries_pkey PRIMARY KEY (id),
    CONSTRAINT webhook_deliveries_endpoint_fkey
        FOREIGN KEY (endpoint_id) REFERENCES webhook_endpoints (id),
    CONSTRAINT webhook_deliveries_event_fkey FOREIGN KEY (event_id) REFERENCES events (id),
    CONSTRAINT webhook_deliveries_attempts_nonnegative CHECK (attempts >= 0),
    CONSTRAINT webhook_deliveries_settled_once
        CHECK (delivered_at IS NULL OR failed_at IS NULL)
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND failed_at IS NULL;
CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (endpoint_id, id);

-- The delivery log: every attempt, with what the receiver answered.
CREATE TABLE webhook_attempts (
    delivery_id bigint      NOT NULL,
    attempt     integer     NOT NULL,
    started_at  timestamptz NOT NULL,
    duration_ms integer     NOT NULL,
    -- The receiver's HTTP status; NULL when there was none (refused, timed out, blocked).
    status_code integer,
    error       text,
    CONSTRAINT webhook_attempts_pkey PRIMARY KEY (delivery_id, attempt),
    CONSTRAINT webhook_attempts_delivery_fkey
        FOREIGN KEY (delivery_id) REFERENCES webhook_deliveries (id),
    CONSTRAINT webhook_attempts_status_code_valid CHECK (status_code BETWEEN 100 AND 599)
);

-- How far each consumer of the event log has read (the webhook fan-out: 'webhooks'). A
-- consumer locks its row to advance it, so replicas take turns.
CREATE TABLE event_cursors (
    name          text   NOT NULL,
    last_event_id bigint NOT NULL,
    CONSTRAINT event_cursors_pkey PRIMARY KEY (name)
);
INSERT INTO event_cursors (name, last_event_id) VALUES ('webhooks', 0);
