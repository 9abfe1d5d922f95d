//! The OpenAPI document: complete, self-consistent, served with Swagger UI.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::harness::TestApp;

/// Every route of SPEC §3 (idempotency and email verification aside), plus health.
const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/users"),
    ("post", "/v1/users/login"),
    ("post", "/v1/tokens/renew_access"),
    ("post", "/v1/users/logout"),
    ("get", "/v1/users/{username}"),
    ("patch", "/v1/users/{username}"),
    ("put", "/v1/users/{username}/role"),
    ("get", "/v1/verify_email"),
    ("post", "/v1/accounts"),
    ("get", "/v1/accounts"),
    ("get", "/v1/accounts/{id}"),
    ("get", "/v1/accounts/{id}/entries"),
    ("get", "/v1/accounts/{id}/balance"),
    ("get", "/v1/accounts/{id}/transfers"),
    ("put", "/v1/accounts/{id}/status"),
    ("put", "/v1/accounts/{id}/overdraft_limit"),
    ("post", "/v1/accounts/{id}/deposits"),
    ("post", "/v1/accounts/{id}/withdrawals"),
    ("post", "/v1/transfers"),
    ("get", "/v1/transfers/{id}"),
    ("post", "/v1/transfers/{id}/reversal"),
    ("post", "/v1/holds"),
    ("get", "/v1/holds/{id}"),
    ("post", "/v1/holds/{id}/capture"),
    ("post", "/v1/holds/{id}/void"),
    ("get", "/v1/accounts/{id}/holds"),
    ("get", "/v1/accounts/{id}/events"),
    ("post", "/v1/webhooks"),
    ("get", "/v1/webhooks"),
    ("delete", "/v1/webhooks/{id}"),
    ("post", "/v1/webhooks/{id}/rotate_secret"),
    ("get", "/v1/webhooks/{id}/deliveries"),
    ("post", "/v1/webhooks/{id}/redeliver"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
];

fn refs<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref", Value::String(r)) => found.push(r),
                    _ => refs(v, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
        _ => {}
    }
}

#[tokio::test]
async fn the_document_covers_every_route_and_every_ref_resolves() {
    let app = TestApp::spawn().await;
    let doc = app
        .call(Method::GET, "/api-docs/openapi.json", None, None)
        .await
        .assert(StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));

    let paths = doc["paths"].as_object().unwrap();
    let mut documented: Vec<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| ["get", "post", "put", "patch", "delete"].contains(&k.as_str()))
                .map(move |m| (m.clone(), path.clone()))
        })
        .collect();
    documented.sort();
    let mut expected: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    expected.sort();
    assert_eq!(documented, expected);

    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(!found.is_empty());
    for reference in found {
        let name = reference
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected ref {reference}"));
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "{reference} does not resolve"
        );
    }

    // Every response says what it means; every guarded route names the bearer scheme.
    for (method, path) in &expected {
        let operation = &paths[path][method];
        for (status, response) in operation["responses"].as_object().unwrap() {
            let description = response["description"].as_str().unwrap_or_default();
            assert!(!description.is_empty(), "{method} {path} {status}");
        }
        let public = path.starts_with("/healthz")
            || path.starts_with("/readyz")
            || path == "/v1/verify_email"
            || path == "/metrics"
            || [
                "/v1/users",
                "/v1/users/login",
                "/v1/users/logout",
                "/v1/tokens/renew_access",
            ]
            .contains(&path.as_str())
                && method == "post";
        assert_eq!(
            operation.get("security").is_some(),
            !public,
            "{method} {path}"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

#[tokio::test]
async fn every_documented_route_is_served() {
    let app = TestApp::spawn().await;
    for (method, path) in ROUTES {
        let concrete = path.replace("{username}", "alice").replace("{id}", "1");
        let method: Method = method.to_uppercase().parse().unwrap();
        if concrete == "/metrics" {
            // Text, not JSON.
            assert_eq!(app.call_raw(method, &concrete).await.0, StatusCode::OK);
            continue;
        }
        let reply = app
            .call(method.clone(), &concrete, None, Some(serde_json::json!({})))
            .await;
        assert_ne!(
            reply.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        assert!(
            !(reply.status == StatusCode::NOT_FOUND
                && reply.body["error"]["message"] == "no such route"),
            "{method} {path} is documented but not routed"
        );
    }
}

#[tokio::test]
async fn swagger_ui_is_served_from_the_binary() {
    let app = TestApp::spawn().await;
    let response = reqwest::get(format!("{}/swagger-ui/", app.address))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let html = response.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    let config = reqwest::get(format!("{}/swagger-ui/swagger-initializer.js", app.address))
        .await
        .unwrap();
    assert_eq!(config.status(), StatusCode::OK);
    assert!(
        config
            .text()
            .await
            .unwrap()
            .contains("/api-docs/openapi.json")
    );
}

#[test]
fn login_and_authenticated_routes_document_throttling_and_no_other_does() {
    let document = serde_json::to_value(simplebank::http::openapi(true)).unwrap();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let throttled = operation["responses"].get("429").is_some();
            let login = matches!(
                path.as_str(),
                "/v1/users/login" | "/users/login" | "/v1/login_user"
            );
            // Sign-up and email verification are bounded per client address.
            let anonymous_with_cost = matches!(
                (method.as_str(), path.as_str()),
                ("post", "/v1/users" | "/users" | "/v1/create_user") | ("get", "/v1/verify_email")
            );
            // Every authenticated request takes a place in its user's fair share.
            let authenticated = operation["security"]
                .as_array()
                .is_some_and(|s| !s.is_empty());
            assert_eq!(
                throttled,
                login || anonymous_with_cost || authenticated,
                "{method} {path}"
            );
        }
    }
}
