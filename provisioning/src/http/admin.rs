//! The admin API (HTTPS, `Authorization: Bearer <token>` compared in
//! constant time; `GET /crl.pem` is public). Every answer is JSON except the
//! ZIP bundles; errors are `{"status":"error","code":…,"message":…}`.
//!
//! | method | path | does |
//! |---|---|---|
//! | GET  | `/api/registrations?status=PENDENTE` | list registrations |
//! | POST | `/api/registrations/{id}/allocate` `{tenant, device_id, name?, notes?}` | issue cert, ZIP bundle |
//! | POST | `/api/registrations/{id}/reject` `{notes?}` | reject |
//! | GET  | `/api/certificates` · `/api/certificates/due` | list |
//! | GET  | `/api/certificates/{id}/bundle` | ZIP without key |
//! | POST | `/api/certificates/{id}/revoke` `{reason?, notes?}` | revoke + CRL |
//! | GET/POST | `/api/bootstrap` `{label}` | list / issue |
//! | GET  | `/api/bootstrap/{id}/bundle` | one-time factory ZIP (then 410) |
//! | POST | `/api/bootstrap/{id}/revoke` `{reason?, notes?}` | emergency revoke + CRL |
//! | GET  | `/api/gateways` · `/api/audit` | list |
//! | POST | `/api/crl` | re-sign and publish the CRL |

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use gatehouse_ca::RevocationReason;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::{AppState, BodyGuard, json_errors, read_body};
use crate::error::{ErrorKind, ProvisioningError};
use crate::service::{AllocateRequest, RevokeTarget};
use crate::store::Status;

/// Actor recorded for admin API actions.
pub const ACTOR: &str = "admin-api";

/// Why the admin token could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(
        "cannot read the admin token file {path}: {source}; create it (mode 0600) with one line \
         of at least 16 characters, or run `gatehouse ca init`"
    )]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the admin token in {path} is shorter than 16 characters; use a long random token")]
    TooShort { path: std::path::PathBuf },
}

/// The admin bearer token. `Debug` never shows it.
#[derive(Clone)]
pub struct AdminToken(Arc<Zeroizing<String>>);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl AdminToken {
    /// Reads the first line of `path`.
    pub fn from_file(path: &std::path::Path) -> Result<AdminToken, TokenError> {
        let text =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|source| TokenError::Read {
                    path: path.to_owned(),
                    source,
                })?,
            );
        let token = text.lines().next().unwrap_or("").trim().to_owned();
        if token.len() < 16 {
            return Err(TokenError::TooShort {
                path: path.to_owned(),
            });
        }
        Ok(AdminToken(Arc::new(Zeroizing::new(token))))
    }

    /// Constant-time comparison with a presented token.
    pub fn matches(&self, presented: &str) -> bool {
        bool::from(self.0.as_bytes().ct_eq(presented.as_bytes()))
    }
}

#[derive(Debug, Clone)]
struct AdminState {
    app: AppState,
    token: AdminToken,
}

/// The admin API router.
pub fn router(app: AppState, token: AdminToken) -> Router {
    let max_body = app.service.settings().max_body_bytes;
    let guard = BodyGuard {
        max_bytes: max_body,
        timeout: app.service.settings().body_read_timeout,
        too_large_code: "payload_too_large",
        refused: None,
    };
    let state = AdminState { app, token };
    let api = Router::new()
        .route("/api/registrations", get(registrations))
        .route("/api/registrations/{id}/allocate", post(allocate))
        .route("/api/registrations/{id}/reject", post(reject))
        .route("/api/certificates", get(certificates))
        .route("/api/certificates/due", get(certificates_due))
        .route("/api/certificates/{id}/bundle", get(certificate_bundle))
        .route("/api/certificates/{id}/revoke", post(revoke_certificate))
        .route("/api/bootstrap", get(bootstraps).post(issue_bootstrap))
        .route("/api/bootstrap/{id}/bundle", get(bootstrap_bundle))
        .route("/api/bootstrap/{id}/revoke", post(revoke_bootstrap))
        .route("/api/gateways", get(gateways))
        .route("/api/audit", get(audit))
        .route("/api/crl", post(publish_crl))
        .route_layer(middleware::from_fn_with_state(guard, read_body))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/crl.pem", get(crl_pem))
        .merge(api)
        .fallback(|| async { err(StatusCode::NOT_FOUND, "not_found", "No such endpoint.") })
        .with_state(state)
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .layer(middleware::map_response(json_errors))
}

fn err(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(json!({"status": "error", "code": code, "message": message.into()})),
    )
        .into_response()
}

async fn require_token(State(st): State<AdminState>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    match presented {
        Some(t) if st.token.matches(t) => next.run(req).await,
        other => {
            st.app.service.metrics().admin_unauthorized.inc();
            tracing::warn!(
                path = ?req.uri().path(),
                reason = if other.is_some() { "wrong token" } else { "no token" },
                "admin API request refused"
            );
            let mut resp = err(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Missing or wrong bearer token (Authorization: Bearer <token from the admin token file>).",
            );
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            resp
        }
    }
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is
/// case-insensitive (RFC 9110 §11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn failure(e: ProvisioningError) -> Response {
    let (status, code) = match e.kind() {
        ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found"),
        ErrorKind::Conflict => (StatusCode::CONFLICT, "conflict"),
        ErrorKind::Invalid => (StatusCode::BAD_REQUEST, "invalid_request"),
        ErrorKind::Gone => (StatusCode::GONE, "gone"),
        ErrorKind::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
    };
    match (&e, e.kind()) {
        (ProvisioningError::Ca(ca), _) => {
            tracing::warn!(error = %ca, "admin request refused by the CA");
        }
        (_, ErrorKind::Internal) => tracing::error!(error = %e, "admin request failed"),
        _ => {}
    }
    err(status, code, e.to_string())
}

fn json_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, Response> {
    let body = body.map_err(|r| err(r.status(), "invalid_request", r.body_text()))?;
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &body
    };
    serde_json::from_slice(body).map_err(|e| {
        err(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("Invalid JSON body: {e}"),
        )
    })
}

fn zip(name: String, bytes: Vec<u8>, extra: &[(&'static str, String)]) -> Response {
    let mut resp = (
        [
            (header::CONTENT_TYPE, "application/zip".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        bytes,
    )
        .into_response();
    for (k, v) in extra {
        if let Ok(v) = HeaderValue::from_str(v) {
            resp.headers_mut().insert(*k, v);
        }
    }
    resp
}

fn ok_json<T: serde::Serialize>(v: &T) -> Response {
    axum::Json(v).into_response()
}

#[derive(Debug, Deserialize)]
struct StatusQuery {
    status: Option<String>,
}

async fn registrations(State(st): State<AdminState>, Query(q): Query<StatusQuery>) -> Response {
    let status = match q.status.as_deref().map(str::parse::<Status>).transpose() {
        Ok(s) => s,
        Err(m) => return err(StatusCode::BAD_REQUEST, "invalid_request", m),
    };
    match st.app.service.store().registrations(status).await {
        Ok(list) => ok_json(&list),
        Err(e) => failure(e.into()),
    }
}

async fn allocate(
    State(st): State<AdminState>,
    Path(id): Path<i64>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let req: AllocateRequest = match json_body(body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    match st.app.service.allocate(id, &req, ACTOR).await {
        Ok(a) => zip(
            format!("{}.zip", a.gateway_code),
            a.bundle,
            &[
                ("x-gatehouse-gateway-code", a.gateway_code.clone()),
                ("x-gatehouse-certificate-id", a.certificate_id.to_string()),
                ("x-gatehouse-serial", a.serial.clone()),
                (
                    "x-gatehouse-mode",
                    if a.legacy { "legacy" } else { "csr" }.to_owned(),
                ),
            ],
        ),
        Err(e) => failure(e),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NotesBody {
    #[serde(default)]
    notes: Option<String>,
}

async fn reject(
    State(st): State<AdminState>,
    Path(id): Path<i64>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let b: NotesBody = match json_body(body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    match st.app.service.reject(id, b.notes.as_deref(), ACTOR).await {
        Ok(r) => ok_json(&r),
        Err(e) => failure(e),
    }
}

async fn certificates(State(st): State<AdminState>) -> Response {
    match st.app.service.store().certificates().await {
        Ok(l) => ok_json(&l),
        Err(e) => failure(e.into()),
    }
}

async fn certificates_due(State(st): State<AdminState>) -> Response {
    match st.app.service.store().certificates_due().await {
        Ok(l) => ok_json(&l),
        Err(e) => failure(e.into()),
    }
}

async fn certificate_bundle(State(st): State<AdminState>, Path(id): Path<i64>) -> Response {
    match st.app.service.certificate_bundle(id, ACTOR).await {
        Ok(b) => zip(format!("certificate-{id}.zip"), b, &[]),
        Err(e) => failure(e),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    notes: Option<String>,
}

fn reason(b: &RevokeBody) -> Result<RevocationReason, Response> {
    match &b.reason {
        None => Ok(RevocationReason::Unspecified),
        Some(r) => r
            .parse()
            .map_err(|m: String| err(StatusCode::BAD_REQUEST, "invalid_request", format!("{m}: use an RFC 5280 reason such as keyCompromise, superseded, cessationOfOperation"))),
    }
}

async fn revoke_certificate(
    State(st): State<AdminState>,
    Path(id): Path<i64>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    revoke(&st, RevokeTarget::Certificate(id), body).await
}

/// A revoke request: the body and its RFC 5280 reason (default
/// unspecified; 400 when either is malformed), then the revocation and the
/// CRL it published.
async fn revoke(
    st: &AdminState,
    target: RevokeTarget,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let b: RevokeBody = match json_body(body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let reason = match reason(&b) {
        Ok(r) => r,
        Err(r) => return r,
    };
    match st
        .app
        .service
        .revoke(target, reason, b.notes.as_deref(), ACTOR)
        .await
    {
        Ok(crl) => ok_json(&json!({"status": "ok", "revoked": target.id(), "crl": crl})),
        Err(e) => failure(e),
    }
}

async fn bootstraps(State(st): State<AdminState>) -> Response {
    match st.app.service.store().bootstraps().await {
        Ok(l) => ok_json(&l),
        Err(e) => failure(e.into()),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IssueBody {
    label: String,
}

async fn issue_bootstrap(
    State(st): State<AdminState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let b: IssueBody = match json_body(body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    match st.app.service.issue_bootstrap(&b.label, ACTOR).await {
        Ok(boot) => (StatusCode::CREATED, axum::Json(boot)).into_response(),
        Err(e) => failure(e),
    }
}

async fn bootstrap_bundle(State(st): State<AdminState>, Path(id): Path<i64>) -> Response {
    match st.app.service.download_bootstrap(id, ACTOR).await {
        Ok(b) => zip(format!("bootstrap-{id}.zip"), b, &[]),
        Err(e) => failure(e),
    }
}

async fn revoke_bootstrap(
    State(st): State<AdminState>,
    Path(id): Path<i64>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    revoke(&st, RevokeTarget::Bootstrap(id), body).await
}

async fn gateways(State(st): State<AdminState>) -> Response {
    match st.app.service.store().gateways().await {
        Ok(l) => ok_json(&l),
        Err(e) => failure(e.into()),
    }
}

async fn audit(State(st): State<AdminState>) -> Response {
    match st.app.service.store().audit_log().await {
        Ok(l) => ok_json(&l),
        Err(e) => failure(e.into()),
    }
}

async fn publish_crl(State(st): State<AdminState>) -> Response {
    match st.app.service.publish_crl_by(ACTOR).await {
        Ok(c) => ok_json(&c),
        Err(e) => failure(e),
    }
}

async fn crl_pem(State(st): State<AdminState>) -> Response {
    super::device::crl_pem_response(&st.app).await
}
