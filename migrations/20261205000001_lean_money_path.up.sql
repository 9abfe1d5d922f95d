-- The money path, lean: what a transfer costs the database, cut to what every feature needs.
-- Measured piece by piece against the bare one-statement transfer of `make bench` (row Y1); see
-- doc/performance.md for the cost of each part.
--
-- 1. A transfer's event is written by the statement that writes the transfer (src/store/
--    transfers.rs, MOVE_MONEY, and `move_money_batch` below), not by a statement trigger with a
--    transition table, and it does not repeat the transfer as JSON: the transfers table is an
--    append-only log already, so the event names its transfer and readers build the resource
--    with `event_data`. Other events (holds, accounts, users) keep their triggers and their JSON.
-- 2. The one-movement statement is sent as itself, a prepared statement, instead of through the
--    PL/pgSQL function `move_money`: the function paid for a second executor, a tuplestore and
--    a 27-column composite on every call. Its rules stay in `movement_verdict`, the one text.
-- 3. A unique key on a column that is NULL for almost every row still inserts an index entry
--    for every row: `transfers_hold_key` and `transfers_reverses_key` become partial unique
--    indexes (same names, same guarantee).
-- 4. CHECK constraints are read back from their stored node trees by every statement that
--    writes the table: the lists of allowed values become one array constant each instead of
--    an array of constants, about a tenth of the text to read.

ALTER TABLE events
    ADD COLUMN transfer_id bigint,
    ALTER COLUMN data DROP NOT NULL,
    -- A transfer's event names its transfer; every other event carries its resource.
    ADD CONSTRAINT events_data_or_transfer CHECK (num_nonnulls(data, transfer_id) = 1),
    DROP CONSTRAINT events_type_valid,
    ADD CONSTRAINT events_type_valid CHECK (type = ANY ('{transfer.created,deposit.created,withdrawal.created,hold.created,hold.captured,hold.voided,hold.expired,transfer.reversed,account.created,account.status_changed,user.email_verified}'::text[]));

ALTER TABLE accounts
    DROP CONSTRAINT accounts_kind_valid,
    ADD CONSTRAINT accounts_kind_valid CHECK (kind = ANY ('{customer,settlement}'::text[])),
    DROP CONSTRAINT accounts_status_valid,
    ADD CONSTRAINT accounts_status_valid CHECK (status = ANY ('{active,frozen,closed}'::text[]));

ALTER TABLE transfers
    DROP CONSTRAINT transfers_hold_key,
    DROP CONSTRAINT transfers_reverses_key;
CREATE UNIQUE INDEX transfers_hold_key ON transfers (hold_id) WHERE hold_id IS NOT NULL;
CREATE UNIQUE INDEX transfers_reverses_key ON transfers (reverses_transfer_id)
    WHERE reverses_transfer_id IS NOT NULL;

DROP TRIGGER transfers_events ON transfers;
DROP FUNCTION events_for_transfers();
DROP FUNCTION move_money(bigint, bigint, bigint, text, text, text, bigint, text, text, bigint);

-- The event a movement of this kind writes.
CREATE FUNCTION movement_event_type(kind text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
SELECT CASE kind WHEN 'deposit' THEN 'deposit.created' WHEN 'withdrawal' THEN 'withdrawal.created'
                 WHEN 'reversal' THEN 'transfer.reversed' ELSE 'transfer.created' END
$$;

-- An event's resource as the API shows it: its own JSON, or its transfer's (transfers never
-- change, so this is the transfer as it was written).
CREATE FUNCTION event_data(data jsonb, transfer_id bigint) RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
SELECT COALESCE(data, (SELECT transfer_view(t) FROM transfers t WHERE t.id = transfer_id))
$$;

-- A group-commit batch: the movements in arrival order, one row each in the same order. Called
-- alone it is its own transaction, so the batch commits (or, on any error, rolls back entirely)
-- within the one round trip. Three statements, whatever the batch's size:
--
-- 1. Every account the batch touches is locked, in ascending id order: the global order the
--    one-movement path uses too, so batches and single movements queue behind each other and
--    never deadlock. `held` is read once the locks are held (as in MOVE_MONEY); nothing in a
--    batch changes a hold.
-- 2. The movements are judged in arrival order by `movement_verdict`, in memory, each against
--    the balances the earlier accepted ones left; a refused one changes nothing and its
--    neighbours go on.
-- 3. One statement writes every accepted transfer, its two entries, its event and the accounts'
--    final balances. Ids are drawn from the identity sequences and handed out in ascending order to
--    the movements in arrival order (`row_number() OVER (ORDER BY id)` makes that independent of
--    the order in which `nextval` is evaluated), so ids sort like the ledger happened and an
--    account's entries by id show its `balance_after` in sequence. The UPDATE reads rows this
--    transaction has locked, so its snapshot cannot be stale.
--
-- `lock_timeout` bounds the wait for the locks (a stuck transaction elsewhere must not stall a
-- lane and everything it carries): the server then runs the movements one by one, so only those
-- touching the held row wait. It is local to this call's transaction.
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
    event AS (
        INSERT INTO events (type, account_id, counter_account_id, transfer_id)
        SELECT movement_event_type(kinds[a.ord]), from_ids[a.ord], to_ids[a.ord], ti.id
        FROM accepted a JOIN transfer_ids ti ON ti.n = a.n
        ORDER BY ti.id
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
