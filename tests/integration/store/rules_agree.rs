//! The two paths of a money movement apply the same rules: random batches of movements (random
//! accounts, owners, amounts, currencies, kinds, account statuses, overdraft limits and pending
//! and expired holds — settlement accounts and missing ones included)
//! run through one group-commit batch on one database and one at a time through `MOVE_MONEY` on
//! another, both databases built the same way. Every movement must get the same verdict and
//! receipt, and afterwards both ledgers must hold the same balances and entries.

use simplebank::store::prelude::*;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use simplebank::domain::{AccountId, AccountStatus, Amount, Currency, Label, TransferReceipt};
use simplebank::store::{Movement, MovementKind, Store, StoreError, paths};
use sqlx::PgPool;

use crate::helpers::{TestDb, amount, assert_ledger_consistent, create_user, username};

const USERS: usize = 3;
const CURRENCIES: [Currency; 2] = [Currency::Usd, Currency::Eur];

/// One case: the accounts to open (user, currency, opening balance) and the movements, which
/// name accounts by their index in a pool (the accounts opened, then the two settlement
/// accounts, then one that does not exist).
#[derive(Debug, Clone)]
struct Case {
    accounts: Vec<Opening>,
    movements: Vec<Planned>,
}

/// An account of a case: its owner and currency (indexes), opening balance, overdraft limit and
/// status.
#[derive(Debug, Clone)]
struct Opening {
    owner: usize,
    currency: usize,
    balance: i64,
    limit: i64,
    status: AccountStatus,
    /// A pending hold on it as payer (0: none), within what it may reserve.
    held: i64,
    /// A hold past its expiry, not yet swept (0: none): it must reserve nothing.
    expired: i64,
}

#[derive(Debug, Clone)]
struct Planned {
    from: usize,
    to: usize,
    amount: i64,
    currency: usize,
    kind: MovementKind,
    /// `None`; `Some(i)` with `i < USERS` a user of the case; `Some(USERS)` a stranger.
    owner: Option<usize>,
}

/// Balances and amounts from a few round values, so that a movement of exactly the balance,
/// one of more than it and one that overflows come up often, not once in thousands of cases.
fn balance() -> impl Strategy<Value = i64> {
    prop_oneof![
        2 => Just(0i64),
        6 => proptest::sample::select(vec![50i64, 100, 200, 300]),
        1 => Just(i64::MAX / 2 + 100),
    ]
}

fn movement_amount() -> impl Strategy<Value = i64> {
    prop_oneof![
        8 => proptest::sample::select(vec![1i64, 50, 100, 150, 200, 300]),
        1 => Just(i64::MAX / 2),
        1 => Just(i64::MAX),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    // Distinct (user, currency) pairs: an owner has one account per currency.
    let accounts = proptest::sample::subsequence(
        (0..USERS)
            .flat_map(|u| (0..CURRENCIES.len()).map(move |c| (u, c)))
            .collect::<Vec<_>>(),
        2..=USERS * CURRENCIES.len(),
    )
    .prop_flat_map(|pairs| {
        let n = pairs.len();
        let control = (
            proptest::sample::select(vec![0i64, 0, 50, 100, 1_000]),
            prop_oneof![
                6 => Just(AccountStatus::Active),
                2 => Just(AccountStatus::Frozen),
                1 => Just(AccountStatus::Closed),
            ],
            proptest::sample::select(vec![0i64, 0, 50, 100, 250]),
            proptest::sample::select(vec![0i64, 0, 70]),
        );
        (
            Just(pairs),
            proptest::collection::vec(balance(), n),
            proptest::collection::vec(control, n),
        )
    })
    .prop_map(|(pairs, balances, controls)| {
        // At most one opening of half of `i64::MAX` per currency: the settlement account pays
        // for every opening, and two would take it past `i64::MIN`. One such account is enough
        // for a deposit or transfer of the large amounts below to overflow it.
        let mut big = [false; CURRENCIES.len()];
        pairs
            .into_iter()
            .zip(balances)
            .zip(controls)
            .map(|(((u, c), b), (limit, status, held, expired))| {
                let b = if b > 400 && std::mem::replace(&mut big[c], true) {
                    100
                } else {
                    b
                };
                // Only an empty account can be closed.
                let status = match status {
                    AccountStatus::Closed if b != 0 => AccountStatus::Frozen,
                    other => other,
                };
                let closed = status == AccountStatus::Closed;
                Opening {
                    owner: u,
                    currency: c,
                    balance: b,
                    limit,
                    status,
                    // A hold never reserves more than the balance and the limit allow, and a
                    // closed account has none.
                    held: if closed {
                        0
                    } else {
                        held.min(b.saturating_add(limit))
                    },
                    expired: if closed { 0 } else { expired },
                }
            })
            .collect::<Vec<_>>()
    });
    accounts.prop_flat_map(|accounts| {
        let pool = accounts.len() + CURRENCIES.len() + 1;
        let kind = prop_oneof![
            6 => Just(MovementKind::Transfer),
            2 => Just(MovementKind::Deposit),
            2 => Just(MovementKind::Withdrawal),
            // Either side may be the bank's, and a frozen payer pays.
            2 => Just(MovementKind::Reversal),
        ];
        // A deposit mostly from, a withdrawal mostly to, the settlement account of its
        // currency (index `accounts + currency`), as the API makes them; any account otherwise.
        let n = accounts.len();
        let planned = (
            kind,
            0..pool,
            0..pool,
            proptest::bool::weighted(0.75),
            movement_amount(),
            0..CURRENCIES.len(),
            proptest::option::of(0..=USERS),
        )
            .prop_map(move |(kind, from, to, usual, amount, currency, owner)| {
                let settlement = n + currency;
                let (from, to) = match kind {
                    MovementKind::Deposit if usual => (settlement, to),
                    MovementKind::Withdrawal if usual => (from, settlement),
                    _ => (from, to),
                };
                Planned {
                    from,
                    to,
                    amount,
                    currency,
                    kind,
                    owner,
                }
            })
            .prop_filter("two different accounts", |p| p.from != p.to);
        (Just(accounts), proptest::collection::vec(planned, 1..=12)).prop_map(
            |(accounts, movements)| Case {
                accounts,
                movements,
            },
        )
    })
}

fn user(case: usize, index: usize) -> String {
    format!("rules{case}u{index}")
}

/// Opens the case's accounts in order, so both databases give them the same ids, and resolves
/// the movements against them. First the ledger of the previous case goes, settlement balances
/// back to zero with it (as their entries are gone): each case starts from an empty ledger, so
/// large opening balances never drive a settlement account out of range.
async fn open(store: &Store, pool: &PgPool, n: usize, case: &Case) -> Vec<Movement> {
    sqlx::raw_sql(
        "TRUNCATE entries, transfers, holds CASCADE; \
         DELETE FROM accounts WHERE kind = 'customer'; \
         UPDATE accounts SET balance = 0;",
    )
    .execute(pool)
    .await
    .unwrap();
    for index in 0..=USERS {
        create_user(store, &user(n, index)).await;
    }
    let mut ids = Vec::new();
    for opening in &case.accounts {
        let currency = CURRENCIES[opening.currency];
        let account = store
            .create_account(&username(&user(n, opening.owner)), currency)
            .await
            .unwrap();
        if opening.balance > 0 {
            store
                .deposit(
                    account.id,
                    amount(opening.balance),
                    currency,
                    simplebank::domain::Label::default(),
                )
                .await
                .expect("opening deposit");
        }
        store
            .set_overdraft_limit(account.id, opening.limit)
            .await
            .expect("overdraft limit");
        store
            .set_account_status(account.id, opening.status, None)
            .await
            .expect("status");
        // Holds as the hold writes leave them (payee: the settlement account, any account
        // will do), one pending and one past its expiry but not swept.
        for (amount, expired) in [(opening.held, false), (opening.expired, true)] {
            if amount == 0 {
                continue;
            }
            sqlx::query(
                "WITH hold AS ( \
                     INSERT INTO holds (from_account_id, to_account_id, amount, currency, \
                                        created_at, expires_at) \
                     SELECT $1, s.id, $2, $3, \
                            CASE WHEN $4 THEN now() - interval '2 hours' ELSE now() END, \
                            now() + CASE WHEN $4 THEN interval '-1 hour' ELSE interval '1 hour' END \
                     FROM accounts s WHERE s.kind = 'settlement' AND s.currency = $3) \
                 UPDATE accounts SET holds_pending = holds_pending + $2 WHERE id = $1",
            )
            .bind(account.id.get())
            .bind(amount)
            .bind(currency.code())
            .bind(expired)
            .execute(pool)
            .await
            .expect("a hold");
        }
        ids.push(account.id);
    }
    for currency in CURRENCIES {
        let id: i64 = sqlx::query_scalar(
            "SELECT id FROM accounts WHERE kind = 'settlement' AND currency = $1",
        )
        .bind(currency.code())
        .fetch_one(pool)
        .await
        .unwrap();
        ids.push(AccountId::new(id).unwrap());
    }
    ids.push(AccountId::new(i64::MAX).unwrap());
    case.movements
        .iter()
        .map(|p| Movement {
            from: ids[p.from],
            to: ids[p.to],
            amount: Amount::new(p.amount).unwrap(),
            currency: CURRENCIES[p.currency],
            kind: p.kind,
            owner: p.owner.map(|i| username(&user(n, i))),
            label: Label::default(),
        })
        .collect()
}

/// What a receipt says, without the ids and times the two databases give differently.
fn gist(outcome: &Result<TransferReceipt, StoreError>) -> String {
    match outcome {
        Ok(r) => format!(
            "ok {}->{} {} {:?}; from entry {} after {}; to entry {} after {}; balances {} {}; \
             available {} {}",
            r.transfer.from_account_id,
            r.transfer.to_account_id,
            r.transfer.amount.minor_units(),
            r.transfer.currency,
            r.from_entry.amount,
            r.from_entry.balance_after,
            r.to_entry.amount,
            r.to_entry.balance_after,
            r.from_account.balance,
            r.to_account.balance,
            r.from_account.available_balance(),
            r.to_account.available_balance(),
        ),
        Err(refused) => format!("refused {refused:?}"),
    }
}

/// Every account's balance and every entry, in order, without the entries' own ids.
async fn ledger(pool: &PgPool) -> (Vec<(i64, i64)>, Vec<(i64, i64, i64)>) {
    let balances = sqlx::query_as("SELECT id, balance FROM accounts ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap();
    let entries = sqlx::query_as(
        "SELECT account_id, amount, balance_after FROM entries ORDER BY account_id, id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    (balances, entries)
}

#[test]
fn a_group_commit_batch_and_one_statement_at_a_time_give_the_same_verdicts_and_ledger() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (batched, alone) = runtime.block_on(async { (TestDb::new().await, TestDb::new().await) });
    let mut runner = TestRunner::new(Config {
        cases: 128,
        failure_persistence: None,
        // Each case changes both databases, so a shrunk re-run would not start where the
        // failure did: report the failing case as it ran.
        max_shrink_iters: 0,
        ..Config::default()
    });
    let cases = std::cell::Cell::new(0);
    // Movements accepted and refused, over every case: both sides of the rules must be reached.
    let seen = std::cell::Cell::new((0, 0));
    let result = runner.run(&case(), |case| {
        let n = cases.get() + 1;
        cases.set(n);
        runtime.block_on(async {
            let movements = open(&batched.store, batched.pool(), n, &case).await;
            let same = open(&alone.store, alone.pool(), n, &case).await;
            assert_eq!(
                movements, same,
                "both databases gave the accounts the same ids"
            );

            let grouped = paths::as_one_batch(&batched.store, &movements)
                .await
                .expect("the batch commits");
            for (i, (movement, grouped)) in movements.iter().zip(&grouped).enumerate() {
                let single = paths::alone(&alone.store, movement).await;
                prop_assert_eq!(
                    gist(grouped),
                    gist(&single),
                    "movement {}: {:?}",
                    i,
                    movement
                );
                let (accepted, refused) = seen.get();
                seen.set(match single {
                    Ok(_) => (accepted + 1, refused),
                    Err(_) => (accepted, refused + 1),
                });
            }
            prop_assert_eq!(ledger(batched.pool()).await, ledger(alone.pool()).await);
            Ok(())
        })
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    runtime.block_on(async {
        assert_ledger_consistent(batched.pool()).await;
        assert_ledger_consistent(alone.pool()).await;
    });
    let (accepted, refused) = seen.get();
    assert!(
        accepted > 0 && refused > 0,
        "{accepted} accepted, {refused} refused"
    );
}
