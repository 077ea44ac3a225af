//! The device API, wire-compatible with the reference backend:
//! `POST /api/provision/register/` (also under `/tds_new/`, where deployed
//! firmware posts) and the public `GET /crl.pem`.
//!
//! Registration requires a valid, unrevoked bootstrap certificate of this
//! fleet as TLS client certificate unless `[provisioning]
//! require_bootstrap_cert = false` (legacy firmware); `GET /crl.pem` needs
//! none (client auth is optional at the TLS layer).
//!
//! Answers (always JSON):
//! * 200 `{"status":"ok","code":"registered","message":…,"registro_id":N}`
//! * 200 `{"status":"ok","code":"already_registered","message":…,
//!   "registro_status":"PENDENTE"|"PROVISIONADO","registro_id":N}`
//! * 400 / 413 `{"status":"error","code":"invalid_request","message":…}`
//! * 401 `{"status":"error","code":"unauthorized","message":…}` (no bootstrap
//!   certificate presented)
//! * 403 `{"status":"error","code":"forbidden","message":…}` (a fleet
//!   certificate that is no bootstrap certificate, or a revoked one)
//! * 408 `{"status":"error","code":"request_timeout","message":…}` (body
//!   slower than `body_read_timeout`)
//! * 429 `{"status":"error","code":"rate_limited","message":…}`
//! * 500 `{"status":"error","code":"server_error","message":…}`

use std::sync::Arc;
use std::time::Instant;

use axum::Extension;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use gatehouse_auth::Fingerprint;
use gatehouse_ca::validate_csr;
use serde_json::{Value, json};

use axum::middleware;

use super::ratelimit::{RateLimiter, client_ip};
use super::{AppState, BodyGuard, Peer, json_errors, read_body};
use crate::mac::Mac;
use crate::store::{NewRegistration, Status};

/// Longest accepted optional text field (serial, modelo, fw_version).
const MAX_FIELD: usize = 64;
/// Longest accepted CSR PEM.
const MAX_CSR: usize = 16 * 1024;

#[derive(Debug, Clone)]
struct DeviceState {
    app: AppState,
    limiter: Arc<RateLimiter>,
}

/// The device API router.
pub fn router(app: AppState) -> Router {
    let s = app.service.settings();
    let limiter = Arc::new(RateLimiter::new(s.rate_limit, s.rate_limit_window));
    let max_body = s.max_body_bytes;
    let guard = BodyGuard {
        max_bytes: max_body,
        timeout: s.body_read_timeout,
        too_large_code: "invalid_request",
        refused: Some(app.service.metrics().register_requests.clone()),
    };
    let state = DeviceState { app, limiter };
    Router::new()
        .route("/api/provision/register/", post(register))
        .route("/api/provision/register", post(register))
        .route("/tds_new/api/provision/register/", post(register))
        .route("/tds_new/api/provision/register", post(register))
        .route("/crl.pem", get(crl_pem))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "No such endpoint.") })
        .with_state(state)
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(guard, read_body))
        .layer(middleware::map_response(json_errors))
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(json!({"status": "error", "code": code, "message": message.into()})),
    )
        .into_response()
}

fn invalid(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, "invalid_request", message)
}

/// An optional text field: absent/null → None; a string → trimmed (empty →
/// None); anything else → error naming the field.
fn text_field(
    body: &serde_json::Map<String, Value>,
    name: &str,
    max: usize,
) -> Result<Option<String>, Response> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            let s = s.trim();
            if s.len() > max {
                return Err(invalid(format!("`{name}` is longer than {max} characters")));
            }
            if s.chars().any(char::is_control) && name != "csr_pem" {
                return Err(invalid(format!("`{name}` contains control characters")));
            }
            Ok((!s.is_empty()).then(|| s.to_owned()))
        }
        Some(_) => Err(invalid(format!("`{name}` must be a string"))),
    }
}

async fn register(
    State(st): State<DeviceState>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let m = st.app.service.metrics().register_requests.clone();
    let outcome = |o: &str| m.with_label_values(&[o]).inc();
    let settings = st.app.service.settings();
    let xff = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
    let ip = client_ip(peer.addr.ip(), xff, &settings.trusted_proxies);
    if !st.limiter.allow(ip, Instant::now()) {
        outcome("rate_limited");
        tracing::warn!(%ip, "registration rate limit exceeded");
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "Too many registration requests from {ip}: at most {} per {}s.",
                settings.rate_limit,
                settings.rate_limit_window.as_secs()
            ),
        );
    }
    let body = match body {
        Ok(b) => b,
        Err(rejection) => {
            outcome("invalid_request");
            let status = rejection.status();
            tracing::info!(%ip, %status, "registration body refused");
            return error(
                status,
                "invalid_request",
                if status == StatusCode::PAYLOAD_TOO_LARGE {
                    format!(
                        "Request body is larger than {} bytes.",
                        settings.max_body_bytes
                    )
                } else {
                    format!("Cannot read the request body: {rejection}")
                },
            );
        }
    };
    if peer.client_cert.is_none() && settings.require_bootstrap_cert {
        outcome("unauthorized");
        tracing::warn!(%ip, "registration without a bootstrap certificate refused");
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Registration requires this fleet's bootstrap certificate as the TLS client \
             certificate: configure the device with bootstrap.crt and bootstrap.key from its \
             factory bundle.",
        );
    }
    match parse(&st, &peer, ip, &body).await {
        Ok(new) => match st.app.service.register(new).await {
            Ok((reg, true)) => {
                outcome("registered");
                (
                    StatusCode::OK,
                    axum::Json(json!({
                        "status": "ok",
                        "code": "registered",
                        "message": "Device registrado. Aguardando alocação pelo administrador.",
                        "registro_id": reg.id,
                    })),
                )
                    .into_response()
            }
            Ok((reg, false)) => {
                outcome("already_registered");
                let message = match reg.status {
                    Status::Provisionado => {
                        "Device já provisionado. Use o certificado individual.".to_owned()
                    }
                    s => format!("Device já registrado. Status: {s}"),
                };
                (
                    StatusCode::OK,
                    axum::Json(json!({
                        "status": "ok",
                        "code": "already_registered",
                        "message": message,
                        "registro_status": reg.status,
                        "registro_id": reg.id,
                    })),
                )
                    .into_response()
            }
            Err(e) => {
                outcome("server_error");
                tracing::error!(%ip, error = ?e.to_string(), "registration could not be stored");
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "Internal error while registering the device; try again later.",
                )
            }
        },
        Err(resp) => {
            outcome(match resp.status() {
                StatusCode::FORBIDDEN => "forbidden",
                StatusCode::UNAUTHORIZED => "unauthorized",
                StatusCode::INTERNAL_SERVER_ERROR => "server_error",
                _ => "invalid_request",
            });
            resp
        }
    }
}

/// Validates the request into a [`NewRegistration`], or the 400 to send.
async fn parse(
    st: &DeviceState,
    peer: &Peer,
    ip: std::net::IpAddr,
    body: &[u8],
) -> Result<NewRegistration, Response> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        tracing::info!(%ip, error = ?e.to_string(), "registration: malformed JSON");
        invalid(format!("Body is not valid JSON: {e}"))
    })?;
    let Value::Object(obj) = value else {
        return Err(invalid("Body must be a JSON object."));
    };
    let mac = match obj.get("mac") {
        None | Some(Value::Null) => return Err(invalid("`mac` is required (aa:bb:cc:dd:ee:ff).")),
        Some(Value::String(s)) => Mac::parse(s).ok_or_else(|| {
            tracing::info!(%ip, "registration: bad MAC");
            invalid("`mac` must be a MAC address like aa:bb:cc:dd:ee:ff.")
        })?,
        Some(_) => return Err(invalid("`mac` must be a string (aa:bb:cc:dd:ee:ff).")),
    };
    let serial = text_field(&obj, "serial", MAX_FIELD)?;
    let model = text_field(&obj, "modelo", MAX_FIELD)?;
    let fw_version = text_field(&obj, "fw_version", MAX_FIELD)?;
    let body_fp = text_field(&obj, "bootstrap_fingerprint", 128)?
        .map(|t| {
            t.parse::<Fingerprint>().map_err(|_| {
                invalid("`bootstrap_fingerprint` must be a SHA-256 fingerprint (64 hex digits, colons optional).")
            })
        })
        .transpose()?;
    let csr_pem = text_field(&obj, "csr_pem", MAX_CSR)?;
    if let Some(csr) = &csr_pem {
        if let Err(e) = validate_csr(csr) {
            tracing::info!(%ip, mac = ?mac.as_str(), error = ?e.to_string(), "registration: CSR refused");
            return Err(invalid(format!("`csr_pem` refused: {e}")));
        }
    }
    // The bootstrap certificate presented over TLS is the truth; a body
    // fingerprint that disagrees with it is refused, and one sent without a
    // certificate (legacy mode) proves nothing and is not recorded.
    let Some(der) = peer.client_cert.as_ref() else {
        if body_fp.is_some() {
            tracing::info!(%ip, mac = ?mac.as_str(), "registration: body bootstrap_fingerprint ignored (no client certificate presented)");
        }
        return Ok(NewRegistration {
            mac: mac.as_str().to_owned(),
            serial,
            model,
            fw_version,
            source_ip: Some(ip.to_string()),
            bootstrap_id: None,
            bootstrap_fingerprint: None,
            csr_pem,
        });
    };
    let fp = Fingerprint::of(der);
    if body_fp.is_some_and(|b| b != fp) {
        tracing::warn!(%ip, mac = ?mac.as_str(), "registration: body bootstrap_fingerprint differs from the TLS client certificate");
        return Err(invalid(
            "`bootstrap_fingerprint` does not match the client certificate presented over TLS.",
        ));
    }
    let bootstrap_id = match st
        .app
        .service
        .store()
        .bootstrap_by_fingerprint(&fp.to_string())
        .await
    {
        Ok(Some(b)) if b.revoked_at.is_some() => {
            tracing::warn!(%ip, mac = ?mac.as_str(), bootstrap = b.id, "registration with a revoked bootstrap certificate refused");
            return Err(error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "The bootstrap certificate is revoked: load the current batch's bootstrap \
                 certificate onto the device.",
            ));
        }
        Ok(Some(b)) => b.id,
        Ok(None) => {
            // Chains to the fleet CA but is no bootstrap we issued.
            tracing::warn!(%ip, mac = ?mac.as_str(), "registration with a fleet certificate that is not a bootstrap certificate refused");
            return Err(error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "The client certificate is not a bootstrap certificate of this fleet: present \
                 bootstrap.crt from the factory bundle.",
            ));
        }
        Err(e) => {
            tracing::error!(error = %e, "bootstrap lookup failed");
            return Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "Internal error while registering the device; try again later.",
            ));
        }
    };
    Ok(NewRegistration {
        mac: mac.as_str().to_owned(),
        serial,
        model,
        fw_version,
        source_ip: Some(ip.to_string()),
        bootstrap_id: Some(bootstrap_id),
        bootstrap_fingerprint: Some(fp.to_string()),
        csr_pem,
    })
}

/// `GET /crl.pem`: the current CRL (public).
pub(crate) async fn crl_pem_response(app: &AppState) -> Response {
    match app.service.current_crl().await {
        Ok(pem) => ([(header::CONTENT_TYPE, "application/x-pem-file")], pem).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot serve the CRL");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "CRL unavailable.",
            )
        }
    }
}

async fn crl_pem(State(st): State<DeviceState>) -> Response {
    crl_pem_response(&st.app).await
}
