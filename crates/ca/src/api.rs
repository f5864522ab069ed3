//! The HTTP API (docs/protocol.md): JSON bodies under `/v1/`, bodies over 64 KiB refused with
//! 413 before they are read, every error as `{"error": CODE, "message": TEXT}` and recorded in
//! the audit log, down to an unknown path (404) or a wrong method (405). The `ca_request` fuzz
//! target (fuzz/fuzz_targets/ca_request.rs) holds the router to that over arbitrary requests.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts as _, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use ssh_tpm_attest::protocol::ErrorBody;
use ssh_tpm_attest::Refusal;

use crate::authority::{refuse, Authority, Context, Failure};
use crate::config::MAX_REQUEST_BYTES;
use crate::ratelimit::Verdict;

/// The API's routes over `authority`.
pub fn router(authority: Arc<Authority>) -> Router {
    Router::new()
        .route("/v1/info", get(info))
        .route("/v1/sessions", post(sessions))
        .route("/v1/enroll", post(enroll))
        .route("/v1/enroll/activate", post(activate))
        .route("/v1/certificates", post(certificates))
        .fallback(unknown_path)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .layer(middleware::from_fn_with_state(
            authority.clone(),
            refuse_declared_oversize,
        ))
        .layer(middleware::from_fn_with_state(
            authority.clone(),
            limit_per_address,
        ))
        .with_state(authority)
}

/// `[rate_limit] per_address_per_minute` over every request, before anything else is done
/// with it: 429 `rate_limited`, recorded once per burst. Without the client's address (the
/// router used without [`crate::serve`]) nothing is limited.
async fn limit_per_address(
    State(ca): State<Arc<Authority>>,
    request: Request,
    next: Next,
) -> Response {
    // The extractor, rather than the extension, so that tests can give an address too.
    let (mut parts, body) = request.into_parts();
    let peer = ConnectInfo::<SocketAddr>::from_request_parts(&mut parts, &()).await;
    let request = Request::from_parts(parts, body);
    let Some(Err((verdict, key))) = peer.ok().map(|c| ca.check_address(c.0.ip())) else {
        return next.run(request).await;
    };
    let per_minute = ca.config.rate_limit.per_address_per_minute;
    let detail =
        format!("too many requests from {key} (more than {per_minute} a minute); wait a minute");
    if verdict == Verdict::FirstRefused {
        let recorded = refuse(
            Refusal::RateLimited,
            format!("{detail}; the rest of this burst is refused without a record"),
        );
        let endpoint: String = request.uri().path().chars().take(PATH_IN_MESSAGE).collect();
        ca.record_failure(&endpoint, &recorded, &Context::default())
            .await;
    }
    let mut response = error_response(&refuse(Refusal::RateLimited, detail), None);
    let retry = HeaderValue::from_static("60");
    response.headers_mut().insert(header::RETRY_AFTER, retry);
    response
}

/// Answers 413 to a request whose `Content-Length` is over the limit within a second, whether
/// or not its body comes (the body limit alone would wait for a body that may never come).
async fn refuse_declared_oversize(
    State(ca): State<Arc<Authority>>,
    request: Request,
    next: Next,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_REQUEST_BYTES as u64) {
        let (parts, body) = request.into_parts();
        // Read a little of what the client is sending anyway, so that closing the connection
        // does not reset it before the client reads the answer; a body that never comes is
        // waited for only briefly.
        let _ = tokio::time::timeout(DRAIN_TIME, axum::body::to_bytes(body, DRAIN_BYTES)).await;
        let mut response =
            refuse_route(&ca, &parts.uri, StatusCode::PAYLOAD_TOO_LARGE, too_large()).await;
        // The rest of the body is not read: the connection cannot be used again.
        let close = HeaderValue::from_static("close");
        response.headers_mut().insert(header::CONNECTION, close);
        return response;
    }
    next.run(request).await
}

/// How much of an oversized body is read and dropped before the 413, at most.
const DRAIN_BYTES: usize = 1024 * 1024;
/// How long the client is given to send that much.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(1);

fn too_large() -> String {
    format!(
        "the request body is larger than {} KiB",
        MAX_REQUEST_BYTES / 1024
    )
}

fn error_response(failure: &Failure, status: Option<StatusCode>) -> Response {
    let status = status.unwrap_or_else(|| {
        StatusCode::from_u16(failure.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    });
    let message = match failure {
        // Internal details stay in the log.
        Failure::Internal(_) => "internal error; the CA's log says more".to_owned(),
        _ => failure.detail().to_owned(),
    };
    let body = ErrorBody {
        error: failure.code().to_owned(),
        message,
    };
    (status, Json(body)).into_response()
}

/// The body of a request to `endpoint` as `T`, or a refusal: 413 when over the limit,
/// `bad_request` when not JSON or not `T`.
fn parse<T: DeserializeOwned>(
    endpoint: &str,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, (Failure, Option<StatusCode>)> {
    let bytes = body.map_err(|rejection| {
        let status = rejection.status();
        let detail = if status == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            format!("the request body cannot be read: {rejection}")
        };
        (refuse(Refusal::BadRequest, detail), Some(status))
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        let detail = match e.classify() {
            serde_json::error::Category::Data => format!(
                "the body is not a {endpoint} request: {e}; docs/protocol.md shows its fields"
            ),
            _ => format!("the body is not JSON: {e}"),
        };
        (refuse(Refusal::BadRequest, detail), None)
    })
}

/// Runs one request: parse, act, record a failure.
async fn handle<Req, Resp, F>(
    authority: &Authority,
    endpoint: &'static str,
    body: Result<Bytes, BytesRejection>,
    act: F,
) -> Response
where
    Req: DeserializeOwned,
    Resp: serde::Serialize,
    F: AsyncFnOnce(&Authority, Req, &mut Context) -> Result<Resp, Failure>,
{
    let mut ctx = Context::default();
    let (failure, status) = match parse::<Req>(endpoint, body) {
        Ok(req) => match act(authority, req, &mut ctx).await {
            Ok(resp) => return Json(resp).into_response(),
            Err(failure) => (failure, None),
        },
        Err(e) => e,
    };
    authority.record_failure(endpoint, &failure, &ctx).await;
    error_response(&failure, status)
}

/// At most this much of an unknown path goes into a message.
const PATH_IN_MESSAGE: usize = 64;

/// Refuses a request outside the API with `bad_request` and `status`, recording it.
async fn refuse_route(ca: &Authority, uri: &Uri, status: StatusCode, detail: String) -> Response {
    let failure = refuse(Refusal::BadRequest, detail);
    let endpoint = uri.path().chars().take(PATH_IN_MESSAGE).collect::<String>();
    ca.record_failure(&endpoint, &failure, &Context::default())
        .await;
    error_response(&failure, Some(status))
}

async fn unknown_path(State(ca): State<Arc<Authority>>, uri: Uri) -> Response {
    let mut path: String = uri.path().chars().take(PATH_IN_MESSAGE).collect();
    if path.len() < uri.path().len() {
        path.push('…');
    }
    let detail = format!(
        "there is no {path}; the CA serves GET /v1/info and POST /v1/sessions, /v1/enroll, \
         /v1/enroll/activate and /v1/certificates"
    );
    refuse_route(&ca, &uri, StatusCode::NOT_FOUND, detail).await
}

async fn wrong_method(State(ca): State<Arc<Authority>>, method: Method, uri: Uri) -> Response {
    let allowed = if uri.path() == "/v1/info" {
        "GET"
    } else {
        "POST"
    };
    let detail = format!("{} takes {allowed}, not {method}", uri.path());
    let mut response = refuse_route(&ca, &uri, StatusCode::METHOD_NOT_ALLOWED, detail).await;
    let allow = HeaderValue::from_static(allowed);
    response.headers_mut().insert(header::ALLOW, allow);
    response
}

async fn info(State(ca): State<Arc<Authority>>) -> Response {
    match ca.info() {
        Ok(info) => Json(info).into_response(),
        Err(failure) => {
            ca.record_failure("/v1/info", &failure, &Context::default())
                .await;
            error_response(&failure, None)
        }
    }
}

async fn sessions(
    State(ca): State<Arc<Authority>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // The body is `{}`; an empty one is accepted too.
    let body = body.map(|b| {
        if b.is_empty() {
            Bytes::from_static(b"{}")
        } else {
            b
        }
    });
    handle(
        &ca,
        "/v1/sessions",
        body,
        async |ca, _: serde_json::Map<_, _>, _| ca.create_session().await,
    )
    .await
}

async fn enroll(State(ca): State<Arc<Authority>>, body: Result<Bytes, BytesRejection>) -> Response {
    handle(&ca, "/v1/enroll", body, async |ca, req, ctx| {
        ca.enroll(&req, ctx).await
    })
    .await
}

async fn activate(
    State(ca): State<Arc<Authority>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(&ca, "/v1/enroll/activate", body, async |ca, req, ctx| {
        ca.activate(&req, ctx).await
    })
    .await
}

async fn certificates(
    State(ca): State<Arc<Authority>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(&ca, "/v1/certificates", body, async |ca, req, ctx| {
        ca.issue(&req, ctx).await
    })
    .await
}
