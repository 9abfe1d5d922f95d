-- Back to the money functions' shape: transfer events by trigger, with their JSON.
CREATE FUNCTION move_money(bigint, bigint, bigint, text, text, text, bigint, text, text, bigint)
    RETURNS SETOF money_movement
    LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN QUERY
    WITH locked AS MATERIALIZED (
        SELECT id, owner, currency, balance, kind, status, overdraft_limit, holds_pending
        FROM accounts
        WHERE id = $1 OR id = $2
        ORDER BY id
        FOR NO KEY UPDATE
    ),
    held AS MATERIALIZED (
        SELECT id, CASE WHEN holds_pending > 0 THEN account_held(id) ELSE 0 END AS held
        FROM locked
    ),
    verdict AS (
        SELECT movement_verdict($5, $6, $3, $4,
                                f.id, f.owner, f.kind, f.status, f.currency, f.balance, fh.held,
                                f.overdraft_limit,
                                t.id, t.kind, t.status, t.currency, t.balance) AS status,
               f.currency AS from_currency,
               t.currency AS to_currency,
               fh.held AS from_held,
               th.held AS to_held
        FROM (VALUES (1)) AS one (x)
        LEFT JOIN locked f ON f.id = $1
        LEFT JOIN locked t ON t.id = $2
        LEFT JOIN held fh ON fh.id = $1
        LEFT JOIN held th ON th.id = $2
    ),
    transfer AS (
        INSERT INTO transfers (from_account_id, to_account_id, amount, currency, hold_id,
                               reference, metadata, reverses_transfer_id)
        SELECT $1, $2, $3, $4, $7, $8, $9::jsonb, $10 FROM verdict v WHERE v.status = 'ok'
        RETURNING id, created_at, hold_id, reverses_transfer_id
    ),
    entry_rows AS (
        INSERT INTO entries (account_id, transfer_id, amount, balance_after)
        SELECT f.id, transfer.id, -$3, f.balance - $3 FROM transfer, locked f WHERE f.id = $1
        UNION ALL
        SELECT t.id, transfer.id, $3, t.balance + $3 FROM transfer, locked t WHERE t.id = $2
        RETURNING id, account_id, balance_after, created_at
    ),
    updated AS (
        UPDATE accounts a
        SET balance = CASE WHEN a.id = $1 THEN l.balance - $3 ELSE l.balance + $3 END
        FROM transfer, locked l
        WHERE a.id = l.id
        RETURNING a.id, a.owner, a.balance, a.kind, a.status, a.overdraft_limit, a.created_at
    )
    SELECT v.status, v.from_currency, v.to_currency,
           tr.id, tr.created_at, tr.hold_id, tr.reverses_transfer_id,
           fe.id, fe.balance_after, fe.created_at,
           te.id, te.balance_after, te.created_at,
           fa.owner, fa.balance, fa.kind, fa.status, fa.overdraft_limit, v.from_held,
           fa.created_at,
           ta.owner, ta.balance, ta.kind, ta.status, ta.overdraft_limit, v.to_held,
           ta.created_at
    FROM verdict v
    LEFT JOIN transfer tr ON true
    LEFT JOIN entry_rows fe ON fe.account_id = $1
    LEFT JOIN entry_rows te ON te.account_id = $2
    LEFT JOIN updated fa ON fa.id = $1
    LEFT JOIN updated ta ON ta.id = $2;
END
$$;

CREATE OR REPLACE FUNCTION move_money_batch(from_ids bigint[], to_ids bigint[], amounts bigint[],
                                 currencies text[], kinds text[], owners text[],
                                 refs text[], metadata text[])
    RETURNS SETOF money_movement
    LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    n integer := cardinality(from_ids);
    -- The locked accounts, by position in ascending id order.
    ids bigint[];
    owner_of text[];
    currency_of text[];
    balance_of bigint[];
    kind_of text[];
    status_of text[];
    limit_of bigint[];
    held_of bigint[];
    created_of timestamptz[];
    -- Per movement: the verdict and, if accepted, the balances it leaves.
    verdicts text[] := array_fill(NULL::text, ARRAY[n]);
    from_after bigint[] := array_fill(NULL::bigint, ARRAY[n]);
    to_after bigint[] := array_fill(NULL::bigint, ARRAY[n]);
    f integer;
    t integer;
BEGIN
    PERFORM set_config('lock_timeout', '250ms', true);
    WITH locked AS MATERIALIZED (
        SELECT id, owner, currency, balance, kind, status, overdraft_limit, holds_pending,
               created_at
        FROM accounts
        WHERE id = ANY (from_ids || to_ids)
        ORDER BY id
        FOR NO KEY UPDATE
    )
    SELECT array_agg(id ORDER BY id), array_agg(owner ORDER BY id),
           array_agg(currency ORDER BY id), array_agg(balance ORDER BY id),
           array_agg(kind ORDER BY id), array_agg(status ORDER BY id),
           array_agg(overdraft_limit ORDER BY id),
           array_agg(CASE WHEN holds_pending > 0 THEN account_held(id) ELSE 0 END ORDER BY id),
           array_agg(created_at ORDER BY id)
    INTO ids, owner_of, currency_of, balance_of, kind_of, status_of, limit_of, held_of,
         created_of
    FROM locked;

    FOR i IN 1 .. n LOOP
        f := array_position(ids, from_ids[i]);
        t := array_position(ids, to_ids[i]);
        verdicts[i] := movement_verdict(
            kinds[i], owners[i], amounts[i], currencies[i],
            ids[f], owner_of[f], kind_of[f], status_of[f], currency_of[f], balance_of[f],
            held_of[f], limit_of[f],
            ids[t], kind_of[t], status_of[t], currency_of[t], balance_of[t]);
        IF verdicts[i] = 'ok' THEN
            balance_of[f] := balance_of[f] - amounts[i];
            balance_of[t] := balance_of[t] + amounts[i];
            from_after[i] := balance_of[f];
            to_after[i] := balance_of[t];
        END IF;
    END LOOP;

    RETURN QUERY
    WITH accepted AS (
        SELECT o AS ord, row_number() OVER (ORDER BY o) AS n
        FROM generate_subscripts(from_ids, 1) AS o
        WHERE verdicts[o] = 'ok'
    ),
    transfer_ids AS MATERIALIZED (
        SELECT id, row_number() OVER (ORDER BY id) AS n
        FROM (SELECT nextval(pg_get_serial_sequence('transfers', 'id')) AS id FROM accepted) AS d
    ),
    entry_ids AS MATERIALIZED (
        SELECT id, row_number() OVER (ORDER BY id) AS n
        FROM (SELECT nextval(pg_get_serial_sequence('entries', 'id')) AS id
              FROM accepted CROSS JOIN (VALUES (1), (2)) AS side (s)) AS d
    ),
    transfer AS (
        INSERT INTO transfers (id, from_account_id, to_account_id, amount, currency, reference,
                               metadata)
        OVERRIDING SYSTEM VALUE
        SELECT ti.id, from_ids[a.ord], to_ids[a.ord], amounts[a.ord], currencies[a.ord],
               refs[a.ord], metadata[a.ord]::jsonb
        FROM accepted a JOIN transfer_ids ti ON ti.n = a.n
        RETURNING id, created_at
    ),
    entry_rows AS (
        INSERT INTO entries (id, account_id, transfer_id, amount, balance_after)
        OVERRIDING SYSTEM VALUE
        SELECT e.id,
               CASE WHEN e.n % 2 = 1 THEN from_ids[a.ord] ELSE to_ids[a.ord] END,
               ti.id,
               CASE WHEN e.n % 2 = 1 THEN -amounts[a.ord] ELSE amounts[a.ord] END,
               CASE WHEN e.n % 2 = 1 THEN from_after[a.ord] ELSE to_after[a.ord] END
        FROM accepted a
        JOIN transfer_ids ti ON ti.n = a.n
        JOIN entry_ids e ON e.n IN (2 * a.n - 1, 2 * a.n)
        RETURNING id, transfer_id, amount, created_at
    ),
    updated AS (
        UPDATE accounts ac SET balance = u.balance
        FROM unnest(ids, balance_of) AS u (id, balance)
        WHERE ac.id = u.id AND ac.balance <> u.balance
    ),
    written AS (
        SELECT a.ord, tr.id AS transfer_id, tr.created_at,
               fe.id AS from_entry_id, fe.created_at AS from_entry_created_at,
               te.id AS to_entry_id, te.created_at AS to_entry_created_at
        FROM accepted a
        JOIN transfer_ids ti ON ti.n = a.n
        JOIN transfer tr ON tr.id = ti.id
        JOIN entry_rows fe ON fe.transfer_id = tr.id AND fe.amount < 0
        JOIN entry_rows te ON te.transfer_id = tr.id AND te.amount > 0
    )
    SELECT verdicts[o], currency_of[p.f], currency_of[p.t],
           w.transfer_id, w.created_at, NULL::bigint, NULL::bigint,
           w.from_entry_id, from_after[o], w.from_entry_created_at,
           w.to_entry_id, to_after[o], w.to_entry_created_at,
           owner_of[p.f], from_after[o], kind_of[p.f], status_of[p.f], limit_of[p.f],
           held_of[p.f], created_of[p.f],
           owner_of[p.t], to_after[o], kind_of[p.t], status_of[p.t], limit_of[p.t],
           held_of[p.t], created_of[p.t]
    FROM generate_subscripts(from_ids, 1) AS o
    CROSS JOIN LATERAL (SELECT array_position(ids, from_ids[o]) AS f,
                               array_position(ids, to_ids[o]) AS t) AS p
    LEFT JOIN written w ON w.ord = o
    ORDER BY o;
END
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


UPDATE events SET data = event_data(data, transfer_id) WHERE data IS NULL;
DROP FUNCTION event_data(jsonb, bigint);
DROP FUNCTION movement_event_type(text);

DROP INDEX transfers_hold_key;
DROP INDEX transfers_reverses_key;
ALTER TABLE transfers
    ADD CONSTRAINT transfers_hold_key UNIQUE (hold_id),
    ADD CONSTRAINT transfers_reverses_key UNIQUE (reverses_transfer_id);

ALTER TABLE accounts
    DROP CONSTRAINT accounts_kind_valid,
    ADD CONSTRAINT accounts_kind_valid CHECK (kind IN ('customer', 'settlement')),
    DROP CONSTRAINT accounts_status_valid,
    ADD CONSTRAINT accounts_status_valid CHECK (status IN ('active', 'frozen', 'closed'));

ALTER TABLE events
    DROP CONSTRAINT events_type_valid,
    ADD CONSTRAINT events_type_valid CHECK (type IN (
        'transfer.created', 'deposit.created', 'withdrawal.created', 'hold.created',
        'hold.captured', 'hold.voided', 'hold.expired', 'transfer.reversed', 'account.created',
        'account.status_changed', 'user.email_verified')),
    DROP CONSTRAINT events_data_or_transfer,
    ALTER COLUMN data SET NOT NULL,
    DROP COLUMN transfer_id;
