//! The gRPC side of the server's limits: bytes that are not a request message, a message over the
//! size limit, the request slots it shares with HTTP, and the request deadline. Each refusal
//! comes in SPEC §4's table with its ErrorInfo, and none of them changes anything.

use bytes::{Buf, BufMut};
use reqwest::StatusCode;
use simplebank::grpc::pb;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use super::rpcs::{authed, client, table_code, violated_fields};
use crate::harness::TestApp;
use crate::helpers::{
    assert_ledger_consistent, snapshot, wait_for_lock_waiters, wait_for_no_lock_waiters,
};

/// Puts its bytes on the wire as the request message, whatever they are, as a broken or hostile
/// client would; reads an answer as bytes.
struct RawCodec;

struct RawEncoder;

struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

async fn send_raw(app: &TestApp, method: &str, message: Vec<u8>) -> Result<Vec<u8>, Status> {
    send_raw_to(app, &format!("/simplebank.v1.SimpleBank/{method}"), message).await
}

async fn send_raw_to(app: &TestApp, path: &str, message: Vec<u8>) -> Result<Vec<u8>, Status> {
    let channel = Channel::from_shared(app.grpc_address.clone())
        .unwrap()
        .connect()
        .await
        .expect("the gRPC server answers");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = path.parse().unwrap();
    grpc.unary(tonic::Request::new(message), path, RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

/// INVALID_ARGUMENT, `invalid_argument` in ErrorInfo, and a violation on the field `request`
/// whose description contains `expected`.
fn assert_bad_request_message(result: Result<impl std::fmt::Debug, Status>, expected: &str) {
    let status = result.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(table_code(&status), "invalid_argument");
    let details = status.get_error_details();
    let violations = &details
        .bad_request()
        .expect("field details")
        .field_violations;
    assert_eq!(violations[0].field, "request", "{violations:?}");
    assert!(
        violations[0].description.contains(expected),
        "{violations:?}"
    );
}

#[tokio::test]
async fn bytes_that_are_not_the_request_message_are_invalid_argument() {
    let app = TestApp::spawn().await;
    let count_users = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM users")
            .fetch_one(app.db.pool())
            .await
            .unwrap()
    };
    let users_before = count_users().await;
    for (what, bytes) in [
        ("a tag cut short", vec![0xff, 0xff, 0xff]),
        // username (field 1, a string) sent as a varint
        ("the wrong wire type", vec![0x08, 0x01]),
        ("a string that is not UTF-8", vec![0x0a, 0x02, 0xff, 0xfe]),
        ("a length past the end", vec![0x0a, 0x7f, b'a']),
    ] {
        let refused = send_raw(&app, "CreateUser", bytes).await;
        assert!(refused.is_err(), "{what}");
        assert_bad_request_message(refused, "protobuf");
    }
    assert_eq!(count_users().await, users_before, "nothing was created");

    // The codec is the only thing in the way: well-formed bytes reach the handler, which
    // judges the fields (an empty message: every field missing).
    let empty = send_raw(&app, "CreateUser", Vec::new()).await.unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    let fields = violated_fields(&empty);
    assert!(fields.iter().any(|f| f == "username"), "{fields:?}");
}

#[tokio::test]
async fn a_message_over_the_body_limit_is_refused_before_decoding() {
    let app = TestApp::spawn_with(&[("HTTP_BODY_LIMIT", "1024")]).await;
    let mut c = client(&app).await;
    let signing_up_with_a_name_of = |length: usize| pb::CreateUserRequest {
        username: "alice".into(),
        full_name: "A".repeat(length),
        email: "alice@example.com".into(),
        password: "password123".into(),
    };
    let refused = c.create_user(signing_up_with_a_name_of(2000)).await;
    assert_bad_request_message(refused, "at most 1024 bytes");
    // Just under the limit is decoded and judged on its fields as usual.
    let judged = c
        .create_user(signing_up_with_a_name_of(900))
        .await
        .unwrap_err();
    assert_eq!(judged.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&judged), ["full_name"]);
}

/// One slot for both APIs and a one-second deadline: a gRPC transfer stuck behind a row lock
/// holds the slot, so HTTP and gRPC requests alike are shed at once while the probes still
/// answer; at the deadline the transfer is answered `unavailable`, the slot is free again, and
/// its database work has given up too (`lock_timeout` follows `REQUEST_TIMEOUT`), so it holds
/// no connection and moves no money when the lock goes.
#[tokio::test]
async fn both_apis_share_the_request_slots_and_the_deadline() {
    let app =
        TestApp::spawn_with(&[("MAX_CONCURRENT_REQUESTS", "1"), ("REQUEST_TIMEOUT", "1s")]).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let banker = app.banker("banker").await;
    let from = app.open_account(&alice, "USD").await;
    let to = app.open_account(&bob, "USD").await;
    app.deposit(&banker, from, 10_000, "USD").await;
    let before = snapshot(app.db.pool()).await;

    let mut holder = app.db.pool().begin().await.unwrap();
    sqlx::query("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE")
        .bind(to)
        .execute(&mut *holder)
        .await
        .unwrap();
    let stuck = {
        let mut c = client(&app).await;
        let token = alice.clone();
        tokio::spawn(async move {
            c.create_transfer(authed(
                &token,
                pb::CreateTransferRequest {
                    from_account_id: from,
                    to_account_id: to,
                    amount: 100,
                    currency: "USD".into(),
                    ..Default::default()
                },
            ))
            .await
        })
    };
    wait_for_lock_waiters(app.db.pool(), 1).await;

    let http = app.get(&format!("/v1/accounts/{from}"), &alice).await;
    http.assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert_eq!(http.header("retry-after"), "1");
    let mut c = client(&app).await;
    let grpc = c
        .get_account(authed(&alice, pb::GetAccountRequest { id: from }))
        .await
        .unwrap_err();
    assert_eq!(grpc.code(), Code::Unavailable, "{grpc:?}");
    assert_eq!(table_code(&grpc), "unavailable");
    assert_eq!(grpc.metadata().get("retry-after").unwrap(), "1");
    let (healthz, _) = app.call_raw(reqwest::Method::GET, "/healthz").await;
    assert_eq!(healthz, StatusCode::OK, "probes skip the slots");

    // Admitted before the others, so not shed: answered at the deadline.
    let late = stuck.await.unwrap().unwrap_err();
    assert_eq!(late.code(), Code::Unavailable, "{late:?}");
    // The slot came back with the answer.
    c.get_account(authed(&alice, pb::GetAccountRequest { id: from }))
        .await
        .expect("served again");
    // While the lock is still held, nothing waits for it any more.
    wait_for_no_lock_waiters(app.db.pool()).await;

    holder.rollback().await.unwrap();
    assert_eq!(
        snapshot(app.db.pool()).await,
        before,
        "the abandoned transfer left nothing"
    );
    assert_ledger_consistent(app.db.pool()).await;
}

#[tokio::test]
async fn invented_method_names_share_one_metrics_series() {
    let app = TestApp::spawn().await;
    for n in 0..20 {
        let path = format!("/simplebank.v1.SimpleBank/Invented{n}");
        let status = send_raw_to(&app, &path, vec![]).await.unwrap_err();
        assert_eq!(status.code(), Code::Unimplemented);
        let status = send_raw_to(&app, &format!("/made.up.Service{n}/Call"), vec![])
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unimplemented);
    }
    let (status, text) = app.call_raw(reqwest::Method::GET, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        text.contains(r#"grpc_requests_total{method="unmatched",code="UNIMPLEMENTED"} 40"#),
        "{text}"
    );
    assert!(
        !text.contains("Invented") && !text.contains("made.up"),
        "{text}"
    );
}
