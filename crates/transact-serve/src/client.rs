//! A small HTTP/1 client for the server: pooled keep-alive connections
//! (hyper), JSON in and out. The load generator and the tests use it.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ErrorBody;
use crate::wire::{ActionsAnswer, ActionsBody, RankAnswer, RankBody};

/// Why a request got no answer, or an answer that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL could not be built.
    #[error("bad URL {url}: {detail}")]
    Url {
        /// The URL.
        url: String,
        /// What was wrong.
        detail: String,
    },
    /// Connecting, sending or receiving failed.
    #[error("{method} {url}: {detail}")]
    Transport {
        /// The method.
        method: String,
        /// The URL.
        url: String,
        /// What failed.
        detail: String,
    },
    /// No answer within the client's timeout.
    #[error("{method} {url}: no answer within {ms} ms")]
    Timeout {
        /// The method.
        method: String,
        /// The URL.
        url: String,
        /// The timeout.
        ms: u128,
    },
    /// The server answered with an error status.
    #[error("{status}: {}", body.as_ref().map_or_else(|| "(no JSON error body)".to_string(), |b| format!("{}: {}", b.error.code, b.error.message)))]
    Status {
        /// The status.
        status: StatusCode,
        /// The JSON error body, when it had one.
        body: Option<ErrorBody>,
        /// The `Retry-After` seconds, when given.
        retry_after_s: Option<u64>,
    },
    /// A 2xx body that is not the expected JSON.
    #[error("undecodable answer: {0}")]
    Decode(String),
}

/// One answer: status, headers, body.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Reply {
    /// The body as `T` when the status is 2xx, else [`ClientError::Status`].
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        if !self.status.is_success() {
            return Err(ClientError::Status {
                status: self.status,
                body: serde_json::from_slice(&self.body).ok(),
                retry_after_s: self
                    .headers
                    .get(header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok()),
            });
        }
        serde_json::from_slice(&self.body).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client of one server (`http://host:port`). Cheap to clone: clones
/// share the connection pool.
#[derive(Clone)]
pub struct Client {
    http: HyperClient<HttpConnector, Full<Bytes>>,
    base: String,
    timeout: Duration,
}

impl Client {
    /// A client of the server at `base` (e.g. `http://127.0.0.1:8080`),
    /// waiting at most 30 s per request. Must be called inside a tokio
    /// runtime.
    pub fn new(base: impl Into<String>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let http = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self {
            http,
            base: base.into().trim_end_matches('/').to_string(),
            timeout: Duration::from_secs(30),
        }
    }

    /// Sets the per-request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends one request.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Reply, ClientError> {
        let url = format!("{}{path}", self.base);
        let req = Request::builder()
            .method(method.clone())
            .uri(&url)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ClientError::Url {
                url: url.clone(),
                detail: e.to_string(),
            })?;
        let transport = |detail: String| ClientError::Transport {
            method: method.to_string(),
            url: url.clone(),
            detail,
        };
        let exchange = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| transport(format!("{e:?}")))?;
            let (parts, body) = resp.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| transport(e.to_string()))?
                .to_bytes();
            Ok(Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout {
                method: method.to_string(),
                url: url.clone(),
                ms: self.timeout.as_millis(),
            }),
        }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<Reply, ClientError> {
        self.send(Method::GET, path, Vec::new()).await
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(&self, path: &str, body: &impl Serialize) -> Result<Reply, ClientError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Decode(e.to_string()))?;
        self.send(Method::POST, path, bytes).await
    }

    /// `POST /v1/rank`.
    pub async fn rank(&self, body: &RankBody) -> Result<RankAnswer, ClientError> {
        self.post_json("/v1/rank", body).await?.json()
    }

    /// `POST /v1/actions`.
    pub async fn append(&self, body: &ActionsBody) -> Result<ActionsAnswer, ClientError> {
        self.post_json("/v1/actions", body).await?.json()
    }
}
