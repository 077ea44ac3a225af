//! The two HTTPS listeners: the device API ([`device`]) and the admin API
//! ([`admin`]), served by one TLS accept loop ([`server`]).

// Handlers' helpers return the finished error `Response` as their `Err`;
// it is built once per failed request, so its size does not matter.
#![allow(clippy::result_large_err)]

pub mod admin;
pub mod device;
pub mod ratelimit;
pub mod server;
pub mod tls;

use std::sync::Arc;

use crate::service::Provisioning;

/// What the accept loop knows about a connection, handed to handlers as an
/// axum `Extension`.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: std::net::SocketAddr,
    /// DER of the client certificate the peer presented (device listener,
    /// optional client auth), already verified against the fleet CA.
    pub client_cert: Option<Arc<Vec<u8>>>,
}

/// Shared state of both APIs.
#[derive(Debug, Clone)]
pub struct AppState {
    pub service: Arc<Provisioning>,
}

/// How a listener reads request bodies: at most `max_bytes`, within
/// `timeout` (a slow-drip body cannot hold a connection for long).
#[derive(Debug, Clone)]
pub(crate) struct BodyGuard {
    pub max_bytes: usize,
    pub timeout: std::time::Duration,
    /// `code` of the 413 answer (the device contract says `invalid_request`).
    pub too_large_code: &'static str,
    /// Counts refusals by outcome (`invalid_request`, `request_timeout`).
    pub refused: Option<prometheus::IntCounterVec>,
}

impl BodyGuard {
    fn count(&self, outcome: &str) {
        if let Some(m) = &self.refused {
            m.with_label_values(&[outcome]).inc();
        }
    }
}

fn error_json(
    status: axum::http::StatusCode,
    code: &str,
    message: impl Into<String>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        status,
        axum::Json(serde_json::json!({"status": "error", "code": code, "message": message.into()})),
    )
        .into_response()
}

/// Middleware: refuses a declared Content-Length over the limit before
/// anything reads the body (so `Expect: 100-continue` gets a 413, never a
/// 100), then buffers the body within the deadline: 408 when it is too
/// slow, 413 when it grows past the limit.
pub(crate) async fn read_body(
    axum::extract::State(guard): axum::extract::State<BodyGuard>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{HeaderValue, StatusCode, header};
    use http_body_util::BodyExt;
    let too_large = || {
        guard.count("invalid_request");
        error_json(
            StatusCode::PAYLOAD_TOO_LARGE,
            guard.too_large_code,
            format!("Request body is larger than {} bytes.", guard.max_bytes),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > guard.max_bytes as u64) {
        let mut resp = too_large();
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return resp;
    }
    let (parts, body) = req.into_parts();
    let limited = http_body_util::Limited::new(body, guard.max_bytes);
    let bytes = match tokio::time::timeout(guard.timeout, limited.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            let mut resp = too_large();
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return resp;
        }
        Ok(Err(e)) => {
            guard.count("invalid_request");
            return error_json(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("Cannot read the request body: {e}"),
            );
        }
        Err(_) => {
            guard.count("request_timeout");
            tracing::info!(path = ?parts.uri.path(), "request body not received in time; connection closed");
            let mut resp = error_json(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "The request body was not received within {:?}; send it at once.",
                    guard.timeout
                ),
            );
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return resp;
        }
    };
    next.run(axum::extract::Request::from_parts(
        parts,
        axum::body::Body::from(bytes),
    ))
    .await
}

/// Response mapper: every error answer that is not JSON yet (axum's
/// rejections: bad path or query, wrong method, body limits …) becomes
/// `{"status":"error","code":…,"message":…}` with the same status.
pub(crate) async fn json_errors(resp: axum::response::Response) -> axum::response::Response {
    use axum::http::{StatusCode, header};
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return resp;
    }
    let code = match status {
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => "invalid_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        s if s.is_server_error() => "server_error",
        _ => "invalid_request",
    };
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = match (status, text.is_empty()) {
        (StatusCode::METHOD_NOT_ALLOWED, _) => {
            let allow = parts
                .headers
                .get(header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            format!("Method not allowed on this path; allowed: {allow}.")
        }
        (_, true) => status
            .canonical_reason()
            .unwrap_or("Request refused")
            .to_owned(),
        (_, false) => text,
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    let json = error_json(status, code, message);
    let (json_parts, body) = json.into_parts();
    for (k, v) in json_parts.headers.iter() {
        parts.headers.insert(k.clone(), v.clone());
    }
    axum::response::Response::from_parts(parts, body)
}
