//! An upstream Qdrant endpoint: pooled HTTP/1.1 connections for REST
//! (`h1_pool`), one HTTP/2 connection for gRPC (`h2_channel`), its API key
//! policy and timeouts, and its health check.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::connect::HttpConnector;

use crate::config::{ClientApiKey, RemoteSpec};
use crate::h1_pool::H1Pool;
use crate::h2_channel::H2Channel;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every body cutover sends or answers with: streamed or buffered alike.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Reads a body's data whole, up to `limit` bytes (trailers are dropped).
/// A body that came in one frame, as most requests do, is not copied.
pub async fn read_whole<B>(body: B, limit: usize) -> Result<Bytes, String>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    read_with_trailers(body, limit).await.map(|(data, _)| data)
}

/// Reads a body whole, its data up to `limit` bytes and its trailers.
pub async fn read_with_trailers<B>(
    mut body: B,
    limit: usize,
) -> Result<(Bytes, Option<HeaderMap>), String>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut only: Option<Bytes> = None;
    let mut joined = bytes::BytesMut::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let data = match frame.map_err(|e| e.to_string())?.into_data() {
            Ok(data) => data,
            Err(frame) => {
                trailers = frame.into_trailers().ok();
                continue;
            }
        };
        if joined.len() + only.as_ref().map_or(0, Bytes::len) + data.len() > limit {
            return Err(format!("the body is larger than {limit} bytes"));
        }
        if only.is_none() && joined.is_empty() {
            only = Some(data);
            continue;
        }
        if let Some(earlier) = only.take() {
            joined.extend_from_slice(&earlier);
        }
        joined.extend_from_slice(&data);
    }
    Ok((only.unwrap_or_else(|| joined.freeze()), trailers))
}

pub fn stream(body: Incoming) -> ProxyBody {
    body.map_err(BoxError::from).boxed_unsync()
}

/// A request URI's path and query, `/` if it has none.
pub fn path_and_query(uri: &Uri) -> http::uri::PathAndQuery {
    uri.path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"))
}

/// HTTP/2 flow-control windows: large enough that a few dozen concurrent
/// requests of a few hundred KiB never wait on a WINDOW_UPDATE.
pub const H2_STREAM_WINDOW: u32 = 1 << 20;
pub const H2_CONNECTION_WINDOW: u32 = 16 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Rest,
    Grpc,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Rest => "rest",
            Protocol::Grpc => "grpc",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream `{upstream}` did not answer within {timeout:?}")]
    Timeout { upstream: String, timeout: Duration },
    #[error("upstream `{upstream}` is unreachable: {}", cause_chain(source.as_ref()))]
    Unreachable { upstream: String, source: BoxError },
    #[error("upstream `{upstream}` broke off its answer: {message}")]
    BrokenAnswer { upstream: String, message: String },
}

/// An error and its causes, `: `-joined: hyper's own message alone
/// ("client error (Connect)") does not say what failed.
fn cause_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

pub struct Upstream {
    pub name: String,
    api_key: Option<HeaderValue>,
    client_api_key: ClientApiKey,
    request_timeout: Duration,
    rest_pool: H1Pool,
    grpc_channel: H2Channel,
}

impl Upstream {
    pub fn new(name: &str, spec: &RemoteSpec) -> Result<Upstream, String> {
        let uri = |url: &str| -> Result<Uri, String> {
            url.trim_end_matches('/')
                .parse()
                .map_err(|e| format!("upstream `{name}`: `{url}`: {e}"))
        };
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(spec.connect_timeout));
        connector.enforce_http(false);
        let tls =
            tls_config(spec.ca_file.as_deref()).map_err(|e| format!("upstream `{name}`: {e}"))?;
        // REST speaks HTTP/1.1 and gRPC HTTP/2, over TLS (offered by ALPN) or not.
        let rest_connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls.clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector.clone());
        let grpc_connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http2()
            .wrap_connector(connector);
        let api_key = spec
            .api_key
            .as_deref()
            .map(HeaderValue::from_str)
            .transpose()
            .map_err(|_| format!("upstream `{name}`: the API key is not a valid header value"))?;
        Ok(Upstream {
            name: name.to_owned(),
            rest_pool: H1Pool::new(
                name,
                uri(&spec.rest)?,
                rest_connector,
                spec.pool_max_idle_per_host,
            )?,
            grpc_channel: H2Channel::new(name, uri(&spec.grpc)?, grpc_connector),
            api_key,
            client_api_key: spec.client_api_key,
            request_timeout: spec.request_timeout,
        })
    }

    /// Sends a request, its path and query kept, to this upstream; answers
    /// when the response headers arrive, the body still streaming.
    pub async fn send(
        &self,
        protocol: Protocol,
        mut request: Request<ProxyBody>,
    ) -> Result<(Response<ProxyBody>, Duration), UpstreamError> {
        *request.version_mut() = match protocol {
            Protocol::Rest => http::Version::HTTP_11,
            Protocol::Grpc => http::Version::HTTP_2,
        };
        strip_hop_by_hop(request.headers_mut());
        self.apply_api_key(request.headers_mut());
        let started = Instant::now();
        // Boxed: the request's future is large, and every handler's future
        // would carry it (and be copied whole when hyper spawns it).
        let response = tokio::time::timeout(
            self.request_timeout,
            Box::pin(self.request(protocol, request)),
        )
        .await
        .map_err(|_| UpstreamError::Timeout {
            upstream: self.name.clone(),
            timeout: self.request_timeout,
        })?
        .map_err(|source| UpstreamError::Unreachable {
            upstream: self.name.clone(),
            source,
        })?;
        Ok((response, started.elapsed()))
    }

    /// One exchange on the protocol's client, unbounded in time.
    async fn request(
        &self,
        protocol: Protocol,
        request: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, BoxError> {
        match protocol {
            Protocol::Rest => self.rest_pool.send(request).await,
            Protocol::Grpc => self.grpc_channel.send(request).await,
        }
    }

    fn apply_api_key(&self, headers: &mut HeaderMap) {
        if self.client_api_key == ClientApiKey::Replace {
            headers.remove("api-key");
            headers.remove(header::AUTHORIZATION);
            if let Some(key) = &self.api_key {
                headers.insert(HeaderName::from_static("api-key"), key.clone());
            }
        }
    }

    /// Ready when its REST health endpoint answers 200.
    pub async fn healthy(&self) -> bool {
        let request = Request::get("/healthz")
            .body(full(Bytes::new()))
            .expect("static request");
        match self.send(Protocol::Rest, request).await {
            Ok((response, _)) => response.status().is_success(),
            Err(_) => false,
        }
    }
}

/// TLS trusting the system's CA certificates and those of `ca_file`.
pub(crate) fn tls_config(
    ca_file: Option<&std::path::Path>,
) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    // Unreadable system certificates are skipped: a CA file may be all there is.
    let (valid, _) =
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    tracing::debug!(system_certificates = valid, "trust store loaded");
    if let Some(path) = ca_file {
        let certificates = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
        if certificates.is_empty() {
            return Err(format!(
                "ca_file {} holds no PEM certificate",
                path.display()
            ));
        }
        for certificate in certificates {
            roots
                .add(certificate)
                .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Headers that belong to one connection, not to the request.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in [
        header::CONNECTION,
        header::HOST,
        header::PROXY_AUTHORIZATION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;
    use hyper::body::Frame;

    fn body(
        chunks: &[&'static [u8]],
    ) -> StreamBody<
        impl futures_util::Stream<Item = Result<Frame<Bytes>, std::convert::Infallible>> + Unpin,
    > {
        let frames: Vec<_> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn reads_one_frame_or_many_whole_within_the_limit() {
        assert_eq!(read_whole(body(&[b"abc"]), 3).await.unwrap(), "abc");
        assert_eq!(
            read_whole(body(&[b"", b"ab", b"c"]), 3).await.unwrap(),
            "abc"
        );
        assert_eq!(read_whole(body(&[]), 3).await.unwrap(), "");
        for chunks in [&[&b"abcd"[..]][..], &[b"ab", b"cd"], &[b"a", b"b", b"cd"]] {
            let err = read_whole(body(chunks), 3).await.unwrap_err();
            assert_eq!(err, "the body is larger than 3 bytes");
        }
    }
}
