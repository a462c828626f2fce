//! An embedding service client, for the `embed` transform: an
//! OpenAI-compatible `/v1/embeddings` or a Hugging Face TEI `/embed`
//! endpoint, called in batches, each with a timeout and retries.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Which API the service speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmbedApi {
    /// `POST {url}` with `{"model", "input": [...]}`, answering `{"data": [{"embedding", "index"}]}`.
    Openai,
    /// `POST {url}` with `{"inputs": [...]}`, answering `[[...], ...]`.
    Tei,
}

/// Where and how to embed; it travels with replayed records, so that a
/// write whose embedding failed is embedded when it is replayed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbedSpec {
    pub url: String,
    pub api: EmbedApi,
    #[serde(default)]
    pub model: Option<String>,
    /// The payload field holding the text.
    pub text_field: String,
    /// Green's vector name; `None` for its unnamed vector.
    #[serde(default)]
    pub vector: Option<String>,
    pub batch_size: usize,
    pub timeout_ms: u64,
    pub retries: u32,
}

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

fn client() -> Result<&'static HttpClient, String> {
    static CLIENT: std::sync::OnceLock<HttpClient> = std::sync::OnceLock::new();
    if let Some(client) = CLIENT.get() {
        return Ok(client);
    }
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(crate::upstream::tls_config(None)?)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(CLIENT.get_or_init(|| Client::builder(TokioExecutor::new()).build(connector)))
}

/// Embeds `texts`, in order, `batch_size` at a time.
pub async fn embed(spec: &EmbedSpec, texts: &[String]) -> Result<Vec<Vec<f32>>, String> {
    let started = Instant::now();
    let mut out = Vec::with_capacity(texts.len());
    for batch in texts.chunks(spec.batch_size.max(1)) {
        out.extend(embed_batch(spec, batch).await.inspect_err(|_| {
            crate::metrics::transform("embed", "error", started.elapsed());
        })?);
    }
    crate::metrics::transform("embed", "ok", started.elapsed());
    Ok(out)
}

async fn embed_batch(spec: &EmbedSpec, texts: &[String]) -> Result<Vec<Vec<f32>>, String> {
    let body = match spec.api {
        EmbedApi::Openai => json!({ "model": spec.model, "input": texts }),
        EmbedApi::Tei => json!({ "inputs": texts }),
    };
    let body = Bytes::from(serde_json::to_vec(&body).expect("JSON values serialize"));
    let mut last_error = String::new();
    for attempt in 0..=spec.retries {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(100 << attempt.min(6))).await;
        }
        match call(spec, body.clone()).await {
            Ok(vectors) if vectors.len() == texts.len() => return Ok(vectors),
            Ok(vectors) => {
                last_error = format!(
                    "the embedding service answered {} vectors for {} texts",
                    vectors.len(),
                    texts.len()
                );
            }
            Err(err) => last_error = err,
        }
    }
    Err(format!(
        "embedding service {}: {last_error} (after {} attempts)",
        spec.url,
        spec.retries + 1
    ))
}

async fn call(spec: &EmbedSpec, body: Bytes) -> Result<Vec<Vec<f32>>, String> {
    let request = hyper::Request::post(&spec.url)
        .header("content-type", "application/json")
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let timeout = Duration::from_millis(spec.timeout_ms);
    let response = tokio::time::timeout(timeout, client()?.request(request))
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
        .map_err(|e| format!("unreachable: {e}"))?;
    let status = response.status();
    let bytes = tokio::time::timeout(timeout, response.into_body().collect())
        .await
        .map_err(|_| format!("no whole answer within {timeout:?}"))?
        .map_err(|e| e.to_string())?
        .to_bytes();
    if !status.is_success() {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)));
    }
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| format!("not JSON: {e}"))?;
    let vectors = match spec.api {
        EmbedApi::Tei => value,
        EmbedApi::Openai => {
            let mut data: Vec<Value> = value["data"]
                .as_array()
                .cloned()
                .ok_or("no `data` in the answer")?;
            data.sort_by_key(|d| d["index"].as_u64().unwrap_or(0));
            Value::Array(data.into_iter().map(|d| d["embedding"].clone()).collect())
        }
    };
    serde_json::from_value(vectors).map_err(|e| format!("unexpected answer: {e}"))
}
