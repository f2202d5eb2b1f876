//! The HTTPS listener under floods: idle, slow and surplus connections are closed by the hub
//! (short timeouts configured here), and healthy requests go on. Every wait is for a condition,
//! with a generous deadline; nothing here measures time.

use std::time::Duration;

use ferrohub_test_support::{TestHub, eventually, tls_connector};
use reqwest::StatusCode;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Deadline for the hub to close what it must close (timeouts here are 1–2 s).
const WITHIN: Duration = Duration::from_secs(30);

const SHORT_TIMEOUTS: &str = "[https]\n\
    handshake_timeout = \"1s\"\n\
    header_read_timeout = \"1s\"\n\
    idle_timeout = \"2s\"\n";

/// Reads until the peer closes (EOF or a reset), discarding data, or fails the test after
/// [`WITHIN`].
async fn closed_by_peer<S: AsyncRead + Unpin>(stream: &mut S, what: &str) {
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(WITHIN, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the hub did not close {what}");
}

async fn tls(hub: &TestHub, alpn: &[&[u8]]) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(hub.https_addr()).await.unwrap();
    tls_connector(&hub.ca_pem(), alpn)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

async fn healthy(hub: &TestHub) -> bool {
    let resp = hub
        .http()
        .get(format!("{}/healthz", hub.base_url()))
        .send()
        .await;
    matches!(resp, Ok(r) if r.status() == StatusCode::OK)
}

#[tokio::test]
async fn idle_and_slow_connections_are_closed() {
    let hub = TestHub::start_with_config(SHORT_TIMEOUTS).await;

    // TCP without a TLS handshake.
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(TcpStream::connect(hub.https_addr()).await.unwrap());
    }
    // TLS done, then nothing: HTTP/1.1 and HTTP/2 (after the connection preface).
    let mut idle_h1 = Vec::new();
    for _ in 0..20 {
        idle_h1.push(tls(&hub, &[b"http/1.1"]).await);
    }
    let mut idle_h2 = Vec::new();
    for _ in 0..20 {
        let mut s = tls(&hub, &[b"h2"]).await;
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            .await
            .unwrap();
        idle_h2.push(s);
    }
    // A keep-alive connection after a request.
    let mut kept = tls(&hub, &[b"http/1.1"]).await;
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    // Headers one byte at a time, never finished.
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut s = tls(&hub, &[b"http/1.1"]).await;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: loc")
            .await
            .unwrap();
        slow.push(s);
    }
    let dribble = async {
        for _ in 0..100 {
            for s in &mut slow {
                if s.write_all(b"a").await.is_err() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    let _ = tokio::time::timeout(WITHIN, dribble).await;

    for s in &mut silent {
        closed_by_peer(s, "a connection without a TLS handshake").await;
    }
    for s in &mut idle_h1 {
        closed_by_peer(s, "an idle HTTP/1.1 connection").await;
    }
    for s in &mut idle_h2 {
        closed_by_peer(s, "an idle HTTP/2 connection").await;
    }
    closed_by_peer(&mut kept, "an idle keep-alive connection").await;
    for s in &mut slow {
        closed_by_peer(s, "a connection sending its headers slowly").await;
    }
    assert!(healthy(&hub).await, "the hub still answers");
}

#[tokio::test]
async fn the_connection_cap_refuses_then_recovers() {
    // Long timeouts: the held connections stay until the test drops them.
    let hub =
        TestHub::start_with_config("[https]\nmax_connections = 8\nhandshake_timeout = \"60s\"\n")
            .await;
    // A client with a connection open before the flood.
    let client = hub.http();
    let url = format!("{}/healthz", hub.base_url());
    assert_eq!(
        client.get(&url).send().await.unwrap().status(),
        StatusCode::OK
    );
    let mut held = Vec::new();
    for _ in 0..7 {
        held.push(TcpStream::connect(hub.https_addr()).await.unwrap());
    }
    // Every slot is taken (7 held + the client's): a new connection is closed at once.
    eventually(WITHIN, "a connection beyond the cap is refused", || async {
        let mut probe = TcpStream::connect(hub.https_addr()).await.ok()?;
        let mut buf = [0u8; 1];
        match tokio::time::timeout(Duration::from_secs(1), probe.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => Some(()),
            _ => None,
        }
    })
    .await;
    assert!(!healthy(&hub).await, "no new connection while at the cap");
    // The connection opened before the flood still serves requests.
    assert_eq!(
        client.get(&url).send().await.unwrap().status(),
        StatusCode::OK
    );
    drop(held);
    eventually(WITHIN, "new connections are served again", || async {
        healthy(&hub).await.then_some(())
    })
    .await;
}

#[tokio::test]
async fn websockets_outlive_the_idle_timeout() {
    use ferrohub_mqtt::QoS;
    use ferrohub_test_support::mqtt::{MqttClient, Transport};

    let hub = TestHub::start_with_config(SHORT_TIMEOUTS).await;
    let d = super::create_device(&hub, "ws1").await;
    let key = ferrohub_auth::SymmetricKey::from_base64(
        d["authentication"]["symmetricKey"]["primaryKey"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let pw = ferrohub_auth::mint(
        "localhost/devices/ws1",
        &key,
        ferrohub_test_support::now_secs() + 600,
        None,
    );
    let ca = hub.ca_pem();
    let (mut ws, ack) = MqttClient::connect(
        Transport::WebSocket(hub.https_addr(), &ca),
        "ws1",
        "localhost/ws1/?api-version=2021-04-12",
        &pw,
        true,
        600,
        None,
    )
    .await;
    assert!(ack.is_some());
    // An idle HTTP connection opened now is closed after the idle timeout; the WebSocket,
    // idle as long, is not.
    let mut idle = tls(&hub, &[b"http/1.1"]).await;
    closed_by_peer(&mut idle, "an idle HTTP/1.1 connection").await;
    assert!(
        ws.publish(
            "devices/ws1/messages/events/",
            QoS::AtLeastOnce,
            b"still here"
        )
        .await
        .is_some(),
        "the WebSocket is still open"
    );
}

#[tokio::test]
async fn a_body_declared_too_large_is_refused_before_it_is_sent() {
    let hub = TestHub::start_with_config("[https]\nmax_request_body_bytes = 4096\n").await;
    let token = hub.policy_token("iothubowner", 600);
    let mut s = tls(&hub, &[b"http/1.1"]).await;
    let head = format!(
        "PUT /devices/big?api-version=2021-04-12 HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: {token}\r\nContent-Type: application/json\r\n\
         Content-Length: 100000000\r\nExpect: 100-continue\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(WITHIN, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed without an answer");
        answer.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 413"), "{text}");
    assert!(text.contains("iothub-errorcode: messagetoolarge"), "{text}");
}
