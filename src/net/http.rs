//! The HTTP admin API (axum): JSON resources over the admin [`Service`].
//!
//! Every route needs `Authorization: Bearer <token>`; a missing or wrong
//! token gets 401. Errors are JSON, `{"error": {"code", "message"}}`, with
//! 400 for bad input, 404 for unknown things, 409 for refused operations.
//! Handlers run the (synchronous, SQLite-backed) service on the blocking pool.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::rtp::BridgeMonitor;
use crate::admin::ids::{ConferenceId, EmailAddress, PhoneNumber};
use crate::admin::model::NumberKind;
use crate::admin::service::{EnableRequest, TenantPatch};
use crate::admin::{AdminError, Service};
use crate::call::MeetingKey;
use crate::directory::Lookup;
use crate::records::CallLog;
use crate::time::{Timestamp, parse_duration};

#[derive(Clone)]
struct ApiState {
    service: Arc<Service>,
    token: Arc<str>,
    /// Recorded as the actor of every change made through this router.
    actor: Arc<str>,
    /// The bridge's records of its last calls.
    calls: Arc<CallLog>,
    /// The bridge's live counters and rooms; `None` when no SIP bridge runs.
    bridge: Option<BridgeMonitor>,
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "invalid",
            message: message.into(),
        }
    }
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        // Our failure or the local disk's (full, read-only): an error, not
        // the client's fault.
        if e.status() >= 500 {
            tracing::error!(error = %e, code = e.code(), "admin operation failed");
        }
        ApiError {
            status: StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code: e.code(),
            message: e.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

type ApiResult = Result<Response, ApiError>;

/// The largest request body: JSON bodies are small...
const BODY_LIMIT: usize = 2 << 20;
/// ...but a CSV import may list many users (about 1 million at 64 MiB).
const IMPORT_LIMIT: usize = 64 << 20;

/// Builds the API router. `actor` names who the changes are recorded as
/// made by; `calls` holds the bridge's records of its last calls;
/// `bridge` watches the bridge's live calls (`None` without SIP).
pub fn router(
    service: Arc<Service>,
    token: String,
    actor: String,
    calls: Arc<CallLog>,
    bridge: Option<BridgeMonitor>,
) -> Router {
    let state = ApiState {
        service,
        token: token.into(),
        actor: actor.into(),
        calls,
        bridge,
    };
    Router::new()
        .route("/api/tenant", get(tenant_show).patch(tenant_set))
        .route("/api/tenant/numbers", post(number_add))
        .route(
            "/api/tenant/numbers/{number}",
            axum::routing::delete(number_remove),
        )
        .route("/api/users", get(user_list).post(user_add))
        .route(
            "/api/users/import",
            post(user_import).layer(DefaultBodyLimit::max(IMPORT_LIMIT)),
        )
        .route("/api/users/{email}", get(user_show))
        .route("/api/users/{email}/enable", post(user_enable))
        .route("/api/users/{email}/disable", post(user_disable))
        .route("/api/users/{email}/reset-id", post(user_reset_id))
        .route("/api/users/{email}/conference-id", put(user_set_id))
        .route("/api/users/{email}/reset-pin", post(user_reset_pin))
        .route("/api/users/{email}/send-info", post(user_send_info))
        .route("/api/meetings", get(meeting_list).post(meeting_schedule))
        .route("/api/meetings/{id}", get(meeting_show))
        .route("/api/migrations", get(migration_list).post(migration_start))
        .route("/api/migrations/run", post(migration_run))
        .route("/api/migrations/{id}", get(migration_show))
        .route("/api/outbox", get(outbox_list))
        .route("/api/outbox/deliver", post(outbox_deliver))
        .route("/api/outbox/{id}", get(outbox_show))
        .route("/api/revocations", get(revocation_list))
        .route("/api/directory/check", get(directory_check))
        .route("/api/directory/{id}", get(directory_lookup))
        .route("/api/calls", get(call_list))
        .route("/api/calls/{call_id}", get(call_show))
        .route("/api/guard", get(guard_show))
        .route("/api/metrics", get(metrics_show))
        .route("/api/bridge", get(bridge_show))
        .route("/api/rooms/{conference_id}", get(room_show))
        .route("/api/clock", get(clock_show))
        .route("/api/clock/advance", post(clock_advance))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(json_errors))
        .with_state(state)
}

/// Constant-time comparison, so response timing does not reveal how much
/// of a guessed token was right.
fn same_token(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn require_token(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let unauthorized = |message: &str| {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: message.to_string(),
        }
        .into_response()
    };
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        return unauthorized(
            "missing bearer token: send 'Authorization: Bearer TOKEN' (the token is in the data folder's admin-token file)",
        );
    };
    // RFC 7235 §2.1: the scheme name is case-insensitive.
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token);
    let Some(token) = token else {
        return unauthorized("malformed Authorization header: it must be 'Bearer TOKEN'");
    };
    if !same_token(token.trim().as_bytes(), state.token.as_bytes()) {
        return unauthorized("wrong bearer token");
    }
    next.run(request).await
}

/// Turns the errors axum answers by itself (405, 413, a path that is not
/// UTF-8, ...) into the API's JSON error form, so every error is JSON.
async fn json_errors(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let allow = response.headers().get(header::ALLOW).cloned();
    let bytes = axum::body::to_bytes(response.into_body(), 64 << 10)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).trim().to_string();
    let (code, message) = match status {
        StatusCode::METHOD_NOT_ALLOWED => (
            "method-not-allowed",
            format!("{method} is not allowed on {path}"),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "too-large",
            format!(
                "the request body is too large: at most {} MiB ({} MiB for a CSV import)",
                BODY_LIMIT >> 20,
                IMPORT_LIMIT >> 20
            ),
        ),
        _ if text.is_empty() => ("invalid", status.to_string()),
        _ => ("invalid", text),
    };
    let mut response = ApiError {
        status,
        code,
        message,
    }
    .into_response();
    if let Some(allow) = allow {
        response.headers_mut().insert(header::ALLOW, allow);
    }
    response
}

async fn not_found(request: Request) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        code: "not-found",
        message: format!(
            "no such API route: {} {} (see docs/ARCHITECTURE.md for the routes)",
            request.method(),
            request.uri().path()
        ),
    }
}

/// Runs a service call on the blocking pool and answers with its JSON.
async fn run<T, F>(state: &ApiState, status: StatusCode, f: F) -> ApiResult
where
    T: Serialize + Send + 'static,
    F: FnOnce(&Service, &str) -> Result<T, AdminError> + Send + 'static,
{
    let service = state.service.clone();
    let actor = state.actor.clone();
    let out = tokio::task::spawn_blocking(move || f(&service, &actor))
        .await
        .map_err(|e| ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: format!("the operation did not finish: {e}"),
        })??;
    Ok((status, axum::Json(out)).into_response())
}

/// Parses a JSON body; an empty body is the type's default.
fn body<T: DeserializeOwned + Default>(bytes: &Bytes) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("request body: {e}")))
}

fn email(text: &str) -> Result<EmailAddress, ApiError> {
    text.parse().map_err(ApiError::bad_request)
}

fn number<T: std::str::FromStr>(what: &str, text: &str) -> Result<T, ApiError> {
    text.parse().map_err(|_| {
        ApiError::bad_request(format!("'{text}' is not a {what}: it is a whole number"))
    })
}

/// Query parameters, refusing names the route does not know.
fn params(
    query: HashMap<String, String>,
    known: &[&str],
) -> Result<HashMap<String, String>, ApiError> {
    if let Some(bad) = query.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "unknown query parameter '{bad}': this route takes {}",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )));
    }
    Ok(query)
}

fn flag(query: &HashMap<String, String>, name: &str) -> Result<Option<bool>, ApiError> {
    query
        .get(name)
        .map(|v| match v.as_str() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            other => Err(ApiError::bad_request(format!(
                "query parameter {name}='{other}': use true or false"
            ))),
        })
        .transpose()
}

/// The one optional email filter a list route takes (`?user=`, `?to=`, ...).
fn email_filter(
    query: HashMap<String, String>,
    name: &str,
) -> Result<Option<EmailAddress>, ApiError> {
    params(query, &[name])?
        .get(name)
        .map(|v| email(v))
        .transpose()
}

#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NoEmail {
    #[serde(default)]
    no_email: bool,
}

// ------------------------------------------------------------------ tenant

async fn tenant_show(State(s): State<ApiState>) -> ApiResult {
    run(&s, StatusCode::OK, |svc, _| svc.tenant()).await
}

async fn tenant_set(State(s): State<ApiState>, bytes: Bytes) -> ApiResult {
    let patch: TenantPatch = body(&bytes)?;
    run(&s, StatusCode::OK, move |svc, actor| {
        svc.update_tenant(actor, &patch)
    })
    .await
}

#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NumberBody {
    number: Option<String>,
    kind: Option<NumberKind>,
    #[serde(default)]
    default: bool,
}

async fn number_add(State(s): State<ApiState>, bytes: Bytes) -> ApiResult {
    let b: NumberBody = body(&bytes)?;
    let text = b.number.ok_or_else(|| {
        ApiError::bad_request("the body needs \"number\", e.g. {\"number\": \"+14255550100\"}")
    })?;
    let number: PhoneNumber = text.parse().map_err(ApiError::bad_request)?;
    let kind = b.kind.unwrap_or(NumberKind::Toll);
    run(&s, StatusCode::CREATED, move |svc, actor| {
        svc.add_number(actor, number, kind, b.default)
    })
    .await
}

async fn number_remove(State(s): State<ApiState>, Path(text): Path<String>) -> ApiResult {
    let number: PhoneNumber = text.parse().map_err(ApiError::bad_request)?;
    run(&s, StatusCode::OK, move |svc, actor| {
        svc.remove_number(actor, &number)
    })
    .await
}

// ------------------------------------------------------------------ users

async fn user_list(
    State(s): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let q = params(q, &["enabled"])?;
    let enabled = flag(&q, "enabled")?;
    run(&s, StatusCode::OK, move |svc, _| svc.users(enabled)).await
}

#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AddUser {
    email: Option<String>,
    display_name: Option<String>,
}

async fn user_add(State(s): State<ApiState>, bytes: Bytes) -> ApiResult {
    let b: AddUser = body(&bytes)?;
    let address = email(b.email.as_deref().ok_or_else(|| {
        ApiError::bad_request("the body needs \"email\", e.g. {\"email\": \"alice@contoso.com\"}")
    })?)?;
    let name = b
        .display_name
        .unwrap_or_else(|| address.as_str().split('@').next().unwrap_or("").to_string());
    run(&s, StatusCode::CREATED, move |svc, actor| {
        svc.add_user(actor, &address, &name)
    })
    .await
}

async fn user_show(State(s): State<ApiState>, Path(text): Path<String>) -> ApiResult {
    let address = email(&text)?;
    run(&s, StatusCode::OK, move |svc, _| svc.user(&address)).await
}

async fn user_enable(
    State(s): State<ApiState>,
    Path(text): Path<String>,
    bytes: Bytes,
) -> ApiResult {
    let mut req: EnableRequest = body(&bytes)?;
    req.email = Some(email(&text)?);
    run(&s, StatusCode::OK, move |svc, actor| {
        svc.enable_user(actor, &req)
    })
    .await
}

async fn user_disable(State(s): State<ApiState>, Path(text): Path<String>) -> ApiResult {
    let address = email(&text)?;
    run(&s, StatusCode::OK, move |svc, actor| {
        svc.disable_user(actor, &address)
    })
    .await
}

async fn user_reset_id(
    State(s): State<ApiState>,
    Path(text): Path<String>,
    bytes: Bytes,
) -> ApiResult {
    let address = email(&text)?;
    let b: NoEmail = body(&bytes)?;
    run(&s, StatusCode::OK, move |svc, actor| {
        svc.reset_conference_id(actor, &address, b.no_email)
    })
    .await
}

#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SetId {
    conference_id: Option<String>,
    #[serde(default)]
    no_email: bool,
}

async fn user_set_id(
    State(s): State<ApiState>,
    Path(text): Path<String>,
    bytes: Bytes,
) -> ApiResult {
    let address = email(&text)?;
    let b: SetId = body(&bytes)?;
    let id: ConferenceId = b
        .conference_id
        .ok_or_else(|| {
            ApiError::bad_request(
                "the body needs \"conference_id\", e.g. {\"conference_id\": \"1234567\"}",
            )
        })?
        .parse()
        .map_err(ApiError::bad_request)?;
    run(&s, StatusCode::OK, move |svc, actor| {
        svc.set_conference_id(actor, &address, id, b.no_email)
    })
    .await
}

async fn user_reset_pin(
    State(s): State<ApiState>,
    Path(text): Path<String>,
    bytes: Bytes,
) -> ApiResult {
    let address = email(&text)?;
    let b: NoEmail = body(&bytes)?;
    run(&s, StatusCode::OK, move |svc, actor| {
        svc.reset_pin(actor, &address, b.no_email)
    })
    .await
}

async fn user_send_info(State(s): State<ApiState>, Path(text): Path<String>) -> ApiResult {
    let address = email(&text)?;
    run(&s, StatusCode::OK, move |svc, actor| {
        svc.send_conference_info(actor, &address)
    })
    .await
}

async fn user_import(
    State(s): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> ApiResult {
    let q = params(q, &["no_email"])?;
    let no_email = flag(&q, "no_email")?.unwrap_or(false);
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // RFC 9110 §8.3.1: media types are case-insensitive.
    if !content_type.to_ascii_lowercase().starts_with("text/csv") {
        return Err(ApiError::bad_request(format!(
            "the import body is a CSV: send it with Content-Type: text/csv (got '{content_type}')"
        )));
    }
    let csv = String::from_utf8(bytes.to_vec())
        .map_err(|e| ApiError::bad_request(format!("the CSV is not UTF-8: {e}")))?;
    run(&s, StatusCode::OK, move |svc, actor| {
        svc.import_users(actor, &csv, no_email)
    })
    .await
}

// ------------------------------------------------------------------ meetings

async fn meeting_list(
    State(s): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let organizer = email_filter(q, "organizer")?;
    run(&s, StatusCode::OK, move |svc, _| {
        svc.meetings(organizer.as_ref())
    })
    .await
}

#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Schedule {
    organizer: Option<String>,
    subject: Option<String>,
    start: Option<String>,
}

async fn meeting_schedule(State(s): State<ApiState>, bytes: Bytes) -> ApiResult {
    let b: Schedule = body(&bytes)?;
    let need = |what: &str| ApiError::bad_request(format!("the body needs \"{what}\""));
    let organizer = email(&b.organizer.ok_or_else(|| need("organizer"))?)?;
    let subject = b.subject.ok_or_else(|| need("subject"))?;
    let start_text = b.start.ok_or_else(|| need("start"))?;
    let now = s.service.clock().now();
    let start = Timestamp::parse_relative(&start_text, now).map_err(ApiError::bad_request)?;
    run(&s, StatusCode::CREATED, move |svc, actor| {
        svc.schedule_meeting(actor, &organizer, &subject, start)
    })
    .await
}

async fn meeting_show(State(s): State<ApiState>, Path(text): Path<String>) -> ApiResult {
    let id = number("meeting ID", &text)?;
    run(&s, StatusCode::OK, move |svc, _| svc.meeting(id)).await
}

// ------------------------------------------------------------------ migrations

async fn migration_list(
    State(s): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let user = email_filter(q, "user")?;
    run(&s, StatusCode::OK, move |svc, _| {
        svc.migration_jobs(user.as_ref())
    })
    .await
}

#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StartMigration {
    user: Option<String>,
}

async fn migration_start(State(s): State<ApiState>, bytes: Bytes) -> ApiResult {
    let b: StartMigration = body(&bytes)?;
    let user = email(
        &b.user
            .ok_or_else(|| ApiError::bad_request("the body needs \"user\""))?,
    )?;
    run(&s, StatusCode::CREATED, move |svc, actor| {
        svc.start_migration(actor, &user)
    })
    .await
}

async fn migration_run(State(s): State<ApiState>) -> ApiResult {
    run(&s, StatusCode::OK, |svc, _| svc.run_due_migrations()).await
}

async fn migration_show(State(s): State<ApiState>, Path(text): Path<String>) -> ApiResult {
    let id = number("migration job ID", &text)?;
    run(&s, StatusCode::OK, move |svc, _| svc.migration_job(id)).await
}

// ------------------------------------------------------------------ outbox, revocations, directory

async fn outbox_list(
    State(s): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let to = email_filter(q, "to")?;
    run(&s, StatusCode::OK, move |svc, _| svc.emails(to.as_ref())).await
}

async fn outbox_show(State(s): State<ApiState>, Path(text): Path<String>) -> ApiResult {
    let id = number("email ID", &text)?;
    run(&s, StatusCode::OK, move |svc, _| svc.email(id)).await
}

async fn outbox_deliver(State(s): State<ApiState>) -> ApiResult {
    run(&s, StatusCode::OK, |svc, _| {
        svc.deliver_queued()
            .map(|delivered| json!({"delivered": delivered}))
    })
    .await
}

async fn revocation_list(
    State(s): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let user = email_filter(q, "user")?;
    run(&s, StatusCode::OK, move |svc, _| {
        svc.revocations(user.as_ref())
    })
    .await
}

async fn directory_lookup(State(s): State<ApiState>, Path(text): Path<String>) -> ApiResult {
    let id: ConferenceId = text.parse().map_err(ApiError::bad_request)?;
    let answer = match s.service.lookup(id) {
        Lookup::Valid(t) => json!({
            "conference_id": id, "status": "valid", "tenant": t.tenant,
            "organizer_id": t.organizer, "meeting_id": t.meeting,
        }),
        Lookup::Revoked(r) => json!({
            "conference_id": id, "status": "revoked", "revoked_at": r.at,
            "operation_id": r.operation, "cause": r.cause, "organizer_id": r.organizer,
        }),
        Lookup::Unknown => json!({"conference_id": id, "status": "unknown"}),
    };
    Ok(axum::Json(answer).into_response())
}

async fn directory_check(State(s): State<ApiState>) -> ApiResult {
    run(&s, StatusCode::OK, |svc, _| {
        svc.verify_directory().map(
            |differences| json!({"entries": svc.directory().len(), "differences": differences}),
        )
    })
    .await
}

// ------------------------------------------------------------------ calls

/// How many call records `GET /api/calls` lists without `?limit=`.
const CALLS_DEFAULT_LIMIT: usize = 100;

async fn call_list(
    State(s): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let q = params(q, &["limit"])?;
    let limit = match q.get("limit") {
        Some(text) => number::<usize>("limit", text)?,
        None => CALLS_DEFAULT_LIMIT,
    };
    let records = s.calls.recent(limit);
    let records: Vec<&crate::records::CallRecordJson> = records.iter().map(|r| &**r).collect();
    Ok(axum::Json(records).into_response())
}

async fn call_show(State(s): State<ApiState>, Path(call_id): Path<String>) -> ApiResult {
    match s.calls.get(&call_id) {
        Some(record) => Ok(axum::Json(&*record).into_response()),
        None => Err(ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not-found",
            message: format!(
                "no record of a call with Call-ID '{call_id}': the bridge keeps the last {} calls that ended (GET /api/calls lists them)",
                crate::records::DEFAULT_CAPACITY
            ),
        }),
    }
}

// ------------------------------------------------------------------ bridge

fn bridge_of(s: &ApiState) -> Result<&BridgeMonitor, ApiError> {
    s.bridge.as_ref().ok_or_else(|| ApiError {
        status: StatusCode::CONFLICT,
        code: "no-bridge",
        message: "this server runs the admin API only, with no SIP bridge: start it with `dialin serve --sip ADDR`".into(),
    })
}

/// The bridge's live counters, since it started.
async fn bridge_show(State(s): State<ApiState>) -> ApiResult {
    let bridge = bridge_of(&s)?;
    Ok(axum::Json(json!({
        "active_calls": bridge.active_calls(),
        "joined_total": bridge.joined_total(),
        "ended_total": bridge.ended_total(),
        "bridge_hangups": bridge.bridge_hangups(),
    }))
    .into_response())
}

// ------------------------------------------------------------------ guard, metrics

fn seconds(d: std::time::Duration) -> u64 {
    // Rounded up: a block with 0.4 s left is not over.
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

async fn guard_show(State(s): State<ApiState>) -> ApiResult {
    let bridge = bridge_of(&s)?;
    let Some(guard) = bridge.guard() else {
        return Ok(axum::Json(json!({"enabled": false})).into_response());
    };
    let (snapshot, now) = guard.snapshot();
    let wall = |at| super::guard::wall(at, now);
    let c = snapshot.config;
    let blocked: Vec<_> = snapshot
        .blocked
        .iter()
        .map(|b| {
            json!({
                "kind": b.key.kind(),
                "key": b.key.to_string(),
                "until": wall(b.until),
                "remaining_s": seconds(b.until.saturating_duration_since(now)),
                "refused": b.refused,
            })
        })
        .collect();
    let recent: Vec<_> = snapshot
        .recent
        .iter()
        .map(|r| {
            json!({
                "kind": r.key.kind(),
                "key": r.key.to_string(),
                "failures": r.failures,
                "last": wall(r.last),
            })
        })
        .collect();
    let t = snapshot.totals;
    Ok(axum::Json(json!({
        "enabled": true,
        "config": {
            "failures": c.failures,
            "caller_id_failures": c.caller_id_failures,
            "window_s": c.window.as_secs(),
            "cooldown_s": c.cooldown.as_secs(),
            "alarm": c.alarm,
            "max_entries": c.max_entries,
        },
        "alarm": {
            "on": snapshot.alarm_since.is_some(),
            "since": snapshot.alarm_since.map(wall),
            "window_failures": snapshot.window_failures,
            "threshold": c.alarm,
        },
        "blocked": blocked,
        "recent": recent,
        "tracked": snapshot.tracked,
        "totals": {
            "failures": t.failures,
            "source_blocks": t.source_blocks,
            "caller_id_blocks": t.caller_id_blocks,
            "refused": t.refused,
            "alarms": t.alarms,
            "evicted": t.evicted,
            "untracked": t.untracked,
        },
    }))
    .into_response())
}

async fn metrics_show(State(s): State<ApiState>) -> ApiResult {
    let text = super::metrics::render(s.bridge.as_ref());
    Ok(([(header::CONTENT_TYPE, super::metrics::CONTENT_TYPE)], text).into_response())
}

/// Who is in the meeting an active ID leads to, now. A revoked or unknown
/// ID leads to no meeting: `callers` is null.
async fn room_show(State(s): State<ApiState>, Path(text): Path<String>) -> ApiResult {
    let bridge = bridge_of(&s)?;
    let id: ConferenceId = text.parse().map_err(ApiError::bad_request)?;
    let answer = match s.service.lookup(id) {
        Lookup::Valid(t) => json!({
            "conference_id": id, "status": "valid",
            "callers": bridge.in_room(&MeetingKey::from(t)),
        }),
        Lookup::Revoked(_) => json!({"conference_id": id, "status": "revoked", "callers": null}),
        Lookup::Unknown => json!({"conference_id": id, "status": "unknown", "callers": null}),
    };
    Ok(axum::Json(answer).into_response())
}

// ------------------------------------------------------------------ clock

async fn clock_show(State(s): State<ApiState>) -> ApiResult {
    let clock = s.service.clock();
    Ok(
        axum::Json(json!({"now": clock.now(), "manual": clock.as_manual().is_some()}))
            .into_response(),
    )
}

#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Advance {
    by: Option<String>,
}

async fn clock_advance(State(s): State<ApiState>, bytes: Bytes) -> ApiResult {
    let b: Advance = body(&bytes)?;
    let by =
        parse_duration(&b.by.ok_or_else(|| {
            ApiError::bad_request("the body needs \"by\", e.g. {\"by\": \"2h\"}")
        })?)
        .map_err(ApiError::bad_request)?;
    let Some(clock) = s.service.clock().as_manual().cloned() else {
        return Err(ApiError {
            status: StatusCode::CONFLICT,
            code: "real-clock",
            message: "this server runs on the real clock, which can't be advanced: start it with --clock manual".into(),
        });
    };
    let now = clock.advance(by).map_err(ApiError::bad_request)?;
    // Whatever came due by the new time runs now, before the answer.
    run(&s, StatusCode::OK, move |svc, _| {
        let runs = svc.run_due_migrations()?;
        Ok(json!({"now": now, "migrations_run": runs}))
    })
    .await
}
