//! A fault-injecting hop for tests: an HTTP server (HTTP/1.1 and HTTP/2) in
//! front of one real upstream port that forwards every request as it came,
//! or delays it, or answers an error in Qdrant's shape, as the test says.
//! The upstream behind it is the real one; only the network between is bent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward as it came.
    None,
    /// Forward after this long.
    Delay(Duration),
    /// Answer every request with an error: REST 503, gRPC UNAVAILABLE.
    Error,
}

type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

pub struct Faulty {
    pub addr: SocketAddr,
    fault: Arc<Mutex<Fault>>,
    task: tokio::task::JoinHandle<()>,
}

impl Faulty {
    /// A hop to `target` (`http://host:port`), speaking gRPC (HTTP/2) or REST.
    pub async fn start(target: &str, grpc: bool) -> Faulty {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fault = Arc::new(Mutex::new(Fault::None));
        let target: Uri = target.parse().unwrap();
        let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
            .http2_only(grpc)
            .build(HttpConnector::new());
        let shared = fault.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let _ = stream.set_nodelay(true);
                let (client, target, fault) = (client.clone(), target.clone(), shared.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let (client, target, fault) =
                            (client.clone(), target.clone(), *fault.lock());
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                hop(client, &target, grpc, fault, request).await,
                            )
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Faulty { addr, fault, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set(&self, fault: Fault) {
        *self.fault.lock() = fault;
    }
}

impl Drop for Faulty {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn hop(
    client: Client<HttpConnector, Incoming>,
    target: &Uri,
    grpc: bool,
    fault: Fault,
    mut request: Request<Incoming>,
) -> Response<Body> {
    match fault {
        Fault::Error if grpc => {
            return Response::builder()
                .header("content-type", "application/grpc")
                .header("grpc-status", "14")
                .header("grpc-message", "injected fault")
                .body(empty())
                .unwrap();
        }
        Fault::Error => {
            return Response::builder()
                .status(503)
                .header("content-type", "application/json")
                .body(
                    Full::new(Bytes::from_static(
                        br#"{"status":{"error":"injected fault"},"time":0.0}"#,
                    ))
                    .map_err(|never| match never {})
                    .boxed(),
                )
                .unwrap();
        }
        Fault::Delay(delay) => tokio::time::sleep(delay).await,
        Fault::None => {}
    }
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    *request.uri_mut() = Uri::builder()
        .scheme("http")
        .authority(target.authority().unwrap().clone())
        .path_and_query(path)
        .build()
        .unwrap();
    match client.request(request).await {
        Ok(response) => response.map(|body| body.map_err(Into::into).boxed()),
        Err(_) => Response::builder().status(502).body(empty()).unwrap(),
    }
}

fn empty() -> Body {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}
