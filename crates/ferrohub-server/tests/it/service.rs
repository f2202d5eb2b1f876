//! Statistics, the OpenAPI document, metrics and unknown routes.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::{create_device, openapi, send};
use ferrohub_test_support::TestHub;

#[tokio::test]
async fn statistics_count_devices() {
    let hub = TestHub::start().await;
    create_device(&hub, "s1").await;
    create_device(&hub, "s2").await;
    let resp = send(
        &hub,
        Method::PUT,
        "/devices/s2",
        None,
        &[("If-Match", "*")],
        Some(r#"{"deviceId":"s2","status":"disabled"}"#),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let s: Value = send(&hub, Method::GET, "/statistics/devices", None, &[], None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(s["totalDeviceCount"], 2);
    assert_eq!(s["enabledDeviceCount"], 1);
    assert_eq!(s["disabledDeviceCount"], 1);
    let s: Value = send(&hub, Method::GET, "/statistics/service", None, &[], None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(s["connectedDeviceCount"], 0);
}

#[tokio::test]
async fn openapi_and_metrics() {
    let hub = TestHub::start().await;
    create_device(&hub, "m1").await;
    let doc = openapi(&hub).await;
    for path in [
        "/devices",
        "/devices/{id}",
        "/devices/{id}/modules",
        "/devices/{id}/modules/{mid}",
        "/statistics/devices",
        "/statistics/service",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} documented");
    }
    assert!(doc["paths"]["/devices/{id}"]["put"].is_object());
    assert!(doc["components"]["schemas"]["Device"].is_object());

    let text = hub
        .http()
        .get(format!("{}/metrics", hub.base_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("ferrohub_http_requests_total"), "{text}");

    let resp = send(&hub, Method::GET, "/no/such/route", None, &[], None).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn tls_1_2_and_1_3_are_offered() {
    use std::sync::Arc;
    let hub = TestHub::start().await;
    let mut roots = rustls::RootCertStore::empty();
    let pem = hub.ca_pem();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let config = rustls::ClientConfig::builder_with_protocol_versions(&[version])
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        for name in ["localhost", "127.0.0.1"] {
            let tcp = tokio::net::TcpStream::connect(hub.https_addr())
                .await
                .unwrap();
            let server_name = rustls_pki_types::ServerName::try_from(name.to_owned()).unwrap();
            let tls = connector.connect(server_name, tcp).await;
            assert!(tls.is_ok(), "{version:?} to {name}: {:?}", tls.err());
        }
    }
}
use rustls_pki_types::pem::PemObject;
