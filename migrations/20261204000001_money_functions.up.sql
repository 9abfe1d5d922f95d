-- Money movements as database functions, so that a whole group-commit batch (lock, judge every
-- movement in order, write, commit) is one call sent in autocommit mode: one round trip, where it
-- used to be four (BEGIN, lock, write, COMMIT) with the judging in the server between them. The
-- one-movement path calls the same function, so both paths run one text of the rules.

-- What one movement returns: its verdict and, when `ok`, what it wrote (column names are the
-- ones `receipt_from_row` in src/store/transfers.rs reads).
CREATE TYPE money_movement AS (
    status                   text,
    from_currency            text,
    to_currency              text,
    transfer_id              bigint,
    transfer_created_at      timestamptz,
    transfer_hold_id         bigint,
    transfer_reverses        bigint,
    from_entry_id            bigint,
    from_entry_balance_after bigint,
    from_entry_created_at    timestamptz,
    to_entry_id              bigint,
    to_entry_balance_after   bigint,
    to_entry_created_at      timestamptz,
    from_owner               text,
    from_balance             bigint,
    from_kind                text,
    from_status              text,
    from_overdraft_limit     bigint,
    from_held                bigint,
    from_created_at          timestamptz,
    to_owner                 text,
    to_balance               bigint,
    to_kind                  text,
    to_status                text,
    to_overdraft_limit       bigint,
    to_held                  bigint,
    to_created_at            timestamptz
);

-- The rules of a money movement, in one place for both paths: the verdict on one movement given
-- its two accounts as they stand (locked), `ok` or the refusal. The order tells a stranger
-- nothing: the from-account must exist and (for a transfer) be the caller's before anything about
-- the to-account, currencies or balances is revealed. An account that does not exist has a NULL
-- id. A SQL function of one expression, so PostgreSQL inlines it where it is called.
CREATE FUNCTION movement_verdict(
    kind text, caller text, amount bigint, currency text,
    from_id bigint, from_owner text, from_kind text, from_status text, from_currency text,
    from_balance bigint, from_held bigint, from_overdraft_limit bigint,
    to_id bigint, to_kind text, to_status text, to_currency text, to_balance bigint)
    RETURNS text
    LANGUAGE sql IMMUTABLE AS $$
SELECT CASE
        WHEN from_id IS NULL THEN 'from_not_found'
        WHEN caller IS NOT NULL AND from_owner <> caller THEN 'not_owner'
        WHEN to_id IS NULL THEN 'to_not_found'
        WHEN from_kind <> 'customer' AND kind NOT IN ('deposit', 'reversal')
            THEN 'from_not_customer'
        WHEN to_kind <> 'customer' AND kind NOT IN ('withdrawal', 'reversal')
            THEN 'to_not_customer'
        WHEN from_status = 'closed' THEN 'from_closed'
        WHEN to_status = 'closed' THEN 'to_closed'
        WHEN from_status = 'frozen' AND kind <> 'reversal' THEN 'from_frozen'
        WHEN from_currency <> currency THEN 'from_currency_mismatch'
        WHEN to_currency <> currency THEN 'to_currency_mismatch'
        WHEN from_kind = 'customer' AND from_balance - from_held < amount - from_overdraft_limit
            THEN 'insufficient_funds'
        WHEN from_balance < (-9223372036854775807 - 1) + amount THEN 'from_overflow'
        WHEN to_balance > 9223372036854775807 - amount THEN 'to_overflow'
        ELSE 'ok'
       END
$$;

-- One movement: $1 from, $2 to, $3 amount, $4 currency, $5 movement kind, $6 the owner the
-- from-account must have (NULL: anyone's), $7 the hold a capture names, $8 the reference, $9 the
-- metadata (JSON text), $10 the transfer a reversal reverses. One statement:
--
-- 1. `locked` takes row locks on both accounts, in ascending id order (`ORDER BY id` sits below
--    the lock in the plan), so two movements over the same pair in opposite directions queue
--    instead of deadlocking. `FOR NO KEY UPDATE` is the lock an UPDATE of a non-key column takes;
--    it does not block the foreign-key checks of unrelated inserts. Under READ COMMITTED a lock
--    that had to wait returns the row as the other transaction left it, so every check below sees
--    the latest committed balance.
-- 2. `verdict` applies every rule (`movement_verdict`) under those locks.
-- 3. Only if the verdict is `ok` do `transfer`, `entry_rows` and `updated` write: one transfer
--    row, two entries with their `balance_after`, two balance updates. Each depends on the
--    previous through its `FROM`, so nothing is written before both locks are held.
--
-- `held` (what the payer's pending, unexpired holds reserve) is read by the VOLATILE function
-- `account_held`, called after `locked` has the locks: a subquery would read the statement's
-- snapshot, taken before any wait for the lock, and miss a hold committed by the transaction that
-- held it. `holds_pending` (on the locked, so current, row) is 0 for most accounts and spares them
-- the call.
--
-- The new balances are computed from `locked`, not from `accounts.balance`: the UPDATE scans with
-- the statement's snapshot, which predates any wait for the locks, and PostgreSQL would check
-- `accounts_balance_within_limit` on a row built from that stale version before re-evaluating,
-- failing it spuriously under contention. `locked` holds the latest committed balance, and the
-- lock keeps it current until commit.
--
-- PL/pgSQL rather than SQL: a PL/pgSQL function keeps its statement's plan for the session, where
-- a (non-inlinable) SQL function plans it again on every call.
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

-- A group-commit batch: the movements in arrival order, one row each in the same order. Called
-- alone it is its own transaction, so the batch commits (or, on any error, rolls back entirely)
-- within the one round trip. Three statements, whatever the batch's size:
--
-- 1. Every account the batch touches is locked, in ascending id order: the global order the
--    one-movement path uses too, so batches and single movements queue behind each other and
--    never deadlock. `held` is read once the locks are held (as in `move_money`); nothing in a
--    batch changes a hold.
-- 2. The movements are judged in arrival order by `movement_verdict`, in memory, each against
--    the balances the earlier accepted ones left; a refused one changes nothing and its
--    neighbours go on.
-- 3. One statement writes every accepted transfer, its two entries and the accounts' final
--    balances. Ids are drawn from the identity sequences and handed out in ascending order to
--    the movements in arrival order (`row_number() OVER (ORDER BY id)` makes that independent of
--    the order in which `nextval` is evaluated), so ids sort like the ledger happened and an
--    account's entries by id show its `balance_after` in sequence. The UPDATE reads rows this
--    transaction has locked, so its snapshot cannot be stale.
--
-- `lock_timeout` bounds the wait for the locks (a stuck transaction elsewhere must not stall a
-- lane and everything it carries): the server then runs the movements one by one, so only those
-- touching the held row wait. It is local to this call's transaction.
CREATE FUNCTION move_money_batch(from_ids bigint[], to_ids bigint[], amounts bigint[],
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
