//! An upstream behind TLS: cutover verifies it against the configured CA and
//! speaks both protocols over it; an upstream it cannot verify is refused.

mod common;

use std::sync::Arc;

use common::*;
use qdrant_client::Qdrant;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// A TLS terminator on loopback in front of `target` (host:port), offering
/// HTTP/2 and HTTP/1.1 by ALPN, with a fresh self-signed certificate for
/// `localhost`. Answers its address and the certificate's PEM.
async fn tls_front(target: String) -> (String, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let pem = certified.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.key_pair.serialize_der().into());
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, target) = (acceptor.clone(), target.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (format!("localhost:{port}"), pem)
}

fn tls_config(dir: &std::path::Path, rest: &str, grpc: &str, ca: Option<&str>) -> String {
    std::fs::write(dir.join("admin-token"), ADMIN_TOKEN).unwrap();
    let ca_line = ca
        .map(|path| format!("ca_file = \"{path}\"\n"))
        .unwrap_or_default();
    format!(
        r#"
state_file = "{state}"
default_upstream = "secure"

[listen]
rest = "127.0.0.1:0"
grpc = "127.0.0.1:0"
admin = "127.0.0.1:0"
admin_token_file = "{token}"

[upstreams.secure]
rest = "https://{rest}"
grpc = "https://{grpc}"
tls = true
{ca_line}"#,
        state = dir.join("state.json").display(),
        token = dir.join("admin-token").display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_protocols_reach_a_tls_upstream_verified_by_its_ca() {
    let upstream = start_upstream().await;
    let (rest, rest_pem) = tls_front(upstream.upstream.rest_addr().to_string()).await;
    let (grpc, grpc_pem) = tls_front(upstream.upstream.grpc_addr().to_string()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, format!("{rest_pem}{grpc_pem}")).unwrap();
    let config = tls_config(dir.path(), &rest, &grpc, Some(ca.to_str().unwrap()));
    let proxy = start_proxy(&config, dir.path()).await;

    let http = reqwest::Client::new();
    let response = http
        .put(format!("{}/collections/secure", proxy.rest_url()))
        .json(&json!({ "vectors": { "size": 2, "distance": "Dot" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "REST over TLS");
    let client = Qdrant::from_url(&proxy.grpc_url()).build().unwrap();
    assert!(
        client.collection_exists("secure").await.unwrap(),
        "gRPC over TLS"
    );
    let ready: Value = http
        .get(format!("{}/readyz", proxy.admin_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["ready"], true);
    proxy.running.stop().await;
    upstream.upstream.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_it_cannot_verify_is_refused() {
    let upstream = start_upstream().await;
    let (rest, _) = tls_front(upstream.upstream.rest_addr().to_string()).await;
    let (grpc, _) = tls_front(upstream.upstream.grpc_addr().to_string()).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = start_proxy(&tls_config(dir.path(), &rest, &grpc, None), dir.path()).await;

    let response = reqwest::get(format!("{}/collections", proxy.rest_url()))
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    let message = body["status"]["error"].as_str().unwrap();
    assert!(
        message.contains("upstream `secure` is unreachable") && message.contains("certificate"),
        "{message}"
    );
    let client = Qdrant::from_url(&proxy.grpc_url()).build().unwrap();
    let err = client.list_collections().await.unwrap_err();
    let qdrant_client::QdrantError::ResponseError { status } = err else {
        panic!("a gRPC status, got {err:?}")
    };
    assert_eq!(status.code(), tonic::Code::Unavailable);
    proxy.running.stop().await;
    upstream.upstream.stop().await;
}
