//! The authorization matrix over gRPC: the same world as the HTTP matrix (`api::authorization`),
//! the same tokens, and the same rights — because both transports ask the same service.

use std::time::Duration;

use secrecy::ExposeSecret;
use simplebank::auth::{TokenMaker, TokenType};
use simplebank::domain::{Role, Username};
use simplebank::grpc::pb;
use tonic::{Code, Status};

use super::rpcs::{Client, authed, client, table_code};
use crate::api::authorization::{World, world};

/// The guarded RPCs that name someone's user, account or transfer.
#[derive(Clone, Copy, Debug)]
enum Rpc {
    GetAccount,
    ListEntries,
    GetTransfer,
    GetHold,
    ListHolds,
    GetUser,
    UpdateUser,
    ListAccountsOfAlice,
    Deposit,
    Withdraw,
    SetUserRole,
}

impl Rpc {
    const ALL: [Rpc; 11] = [
        Rpc::GetAccount,
        Rpc::ListEntries,
        Rpc::GetTransfer,
        Rpc::GetHold,
        Rpc::ListHolds,
        Rpc::GetUser,
        Rpc::UpdateUser,
        Rpc::ListAccountsOfAlice,
        Rpc::Deposit,
        Rpc::Withdraw,
        Rpc::SetUserRole,
    ];

    /// Expected for (alice the owner, bob the stranger, the banker). Someone else's account is
    /// NOT_FOUND to a customer, as one that does not exist (SPEC §10).
    fn expected(self) -> [Code; 3] {
        use Code::{NotFound as Unseen, Ok, PermissionDenied as Denied};
        match self {
            Rpc::Deposit | Rpc::Withdraw | Rpc::SetUserRole => [Denied, Denied, Ok],
            Rpc::GetAccount | Rpc::ListEntries | Rpc::ListHolds => [Ok, Unseen, Ok],
            _ => [Ok, Denied, Ok],
        }
    }

    async fn call(self, c: &mut Client, w: &World, token: &str) -> Result<(), Status> {
        let account = w.account;
        match self {
            Rpc::GetAccount => c
                .get_account(authed(token, pb::GetAccountRequest { id: account }))
                .await
                .map(drop),
            Rpc::ListEntries => c
                .list_entries(authed(
                    token,
                    pb::ListEntriesRequest {
                        account_id: account,
                        ..Default::default()
                    },
                ))
                .await
                .map(drop),
            Rpc::GetTransfer => c
                .get_transfer(authed(token, pb::GetTransferRequest { id: w.transfer }))
                .await
                .map(drop),
            Rpc::GetHold => c
                .get_hold(authed(token, pb::GetHoldRequest { hold_id: w.hold }))
                .await
                .map(drop),
            Rpc::ListHolds => c
                .list_holds(authed(
                    token,
                    pb::ListHoldsRequest {
                        account_id: account,
                        ..Default::default()
                    },
                ))
                .await
                .map(drop),
            Rpc::GetUser => c
                .get_user(authed(
                    token,
                    pb::GetUserRequest {
                        username: "alice".into(),
                    },
                ))
                .await
                .map(drop),
            Rpc::UpdateUser => c
                .update_user(authed(
                    token,
                    pb::UpdateUserRequest {
                        username: "alice".into(),
                        full_name: Some("Alice L.".into()),
                        ..Default::default()
                    },
                ))
                .await
                .map(drop),
            Rpc::ListAccountsOfAlice => c
                .list_accounts(authed(
                    token,
                    pb::ListAccountsRequest {
                        owner: "alice".into(),
                        ..Default::default()
                    },
                ))
                .await
                .map(drop),
            Rpc::Deposit => c
                .deposit(authed(
                    token,
                    pb::DepositRequest {
                        account_id: account,
                        amount: 5,
                        currency: "USD".into(),
                        ..Default::default()
                    },
                ))
                .await
                .map(drop),
            Rpc::Withdraw => c
                .withdraw(authed(
                    token,
                    pb::WithdrawRequest {
                        account_id: account,
                        amount: 5,
                        currency: "USD".into(),
                        ..Default::default()
                    },
                ))
                .await
                .map(drop),
            Rpc::SetUserRole => c
                .set_user_role(authed(
                    token,
                    pb::SetUserRoleRequest {
                        username: "bob".into(),
                        role: "depositor".into(),
                    },
                ))
                .await
                .map(drop),
        }
    }
}

#[tokio::test]
async fn owners_strangers_and_bankers_get_exactly_their_rights_over_grpc() {
    let w = world().await;
    let mut c = client(&w.app).await;
    for rpc in Rpc::ALL {
        let expected = rpc.expected();
        for (who, token, code) in [
            ("alice", &w.alice, expected[0]),
            ("bob", &w.bob, expected[1]),
            ("banker", &w.banker, expected[2]),
        ] {
            let got = rpc.call(&mut c, &w, token).await;
            match got {
                Ok(()) => assert_eq!(code, Code::Ok, "{who} {rpc:?} succeeded"),
                Err(status) => {
                    assert_eq!(status.code(), code, "{who} {rpc:?}: {}", status.message());
                    let table = if code == Code::NotFound {
                        "not_found"
                    } else {
                        "permission_denied"
                    };
                    assert_eq!(table_code(&status), table, "{who} {rpc:?}");
                }
            }
        }
    }
}

#[tokio::test]
async fn every_guarded_rpc_refuses_a_missing_or_forged_token() {
    let w = world().await;
    let mut c = client(&w.app).await;
    // A v4.local token made with another key: well-formed, but not ours.
    let forged = TokenMaker::new(&[7u8; 32])
        .unwrap()
        .issue(
            uuid::Uuid::new_v4(),
            &Username::parse("clerk").unwrap(),
            Role::Banker,
            TokenType::Access,
            Duration::from_secs(60),
            chrono::Utc::now(),
        )
        .unwrap()
        .token;
    let forged = forged.expose_secret();
    for rpc in Rpc::ALL {
        for token in ["", "not-a-token", forged] {
            let status = rpc
                .call(&mut c, &w, token)
                .await
                .expect_err("refused without a valid token");
            assert_eq!(status.code(), Code::Unauthenticated, "{rpc:?} {token:?}");
            assert_eq!(table_code(&status), "unauthenticated", "{rpc:?}");
        }
    }
}
