//! Server reflection (what evans and grpcurl use) and health, spoken as a client would.

use tokio_stream::StreamExt;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

use crate::harness::TestApp;

async fn channel(app: &TestApp) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(app.grpc_address.clone())
        .unwrap()
        .connect()
        .await
        .expect("the gRPC server answers")
}

#[tokio::test]
async fn reflection_lists_the_bank_and_health_over_both_protocol_versions() {
    let app = TestApp::spawn().await;

    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut v1 = ServerReflectionClient::new(channel(&app).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = v1
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("{reply:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in ["simplebank.v1.SimpleBank", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == expected), "{names:?}");
    }
    // A client with no .proto can fetch the schema of every RPC.
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(
            "simplebank.v1.SimpleBank".into(),
        )),
    };
    let mut replies = v1
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.next().await.unwrap().unwrap();
    assert!(
        matches!(reply.message_response, Some(MessageResponse::FileDescriptorResponse(ref f)) if !f.file_descriptor_proto.is_empty())
    );

    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest as AlphaRequest,
        server_reflection_client::ServerReflectionClient as AlphaClient,
        server_reflection_request::MessageRequest as AlphaMessage,
        server_reflection_response::MessageResponse as AlphaResponse,
    };
    let mut alpha = AlphaClient::new(channel(&app).await);
    let request = AlphaRequest {
        host: String::new(),
        message_request: Some(AlphaMessage::ListServices(String::new())),
    };
    let mut replies = alpha
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.next().await.unwrap().unwrap();
    let Some(AlphaResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("{reply:?}")
    };
    assert!(
        list.service
            .iter()
            .any(|s| s.name == "simplebank.v1.SimpleBank")
    );
}

/// Polls the health of `service` until it reports `wanted` (bounded: about 5 s).
async fn wait_for_health(app: &TestApp, service: &str, wanted: ServingStatus) -> i32 {
    let mut health = HealthClient::new(channel(app).await);
    let mut status = ServingStatus::Unknown as i32;
    for _ in 0..50 {
        status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .map(|r| r.into_inner().status)
            .unwrap_or(ServingStatus::Unknown as i32);
        if status == wanted as i32 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    status
}

#[tokio::test]
async fn health_is_serving_while_the_database_answers() {
    let app = TestApp::spawn().await;
    for service in ["", "simplebank.v1.SimpleBank"] {
        let status = wait_for_health(&app, service, ServingStatus::Serving).await;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
}

#[tokio::test]
async fn health_is_not_serving_when_the_database_is_unreachable() {
    let db = crate::helpers::TestDb::unmigrated(1).await;
    let app = TestApp::spawn_on(
        db,
        "postgresql://root:secret@127.0.0.1:1/nowhere".into(),
        &[("DB_ACQUIRE_TIMEOUT", "200ms")],
        false,
    )
    .await;
    let status = wait_for_health(&app, "simplebank.v1.SimpleBank", ServingStatus::NotServing).await;
    assert_eq!(status, ServingStatus::NotServing as i32);
}
