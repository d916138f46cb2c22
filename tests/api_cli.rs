//! The admin API and the admin CLI, black-box over loopback: who may call
//! the API, how it answers bad input and refused operations, the
//! conference ID reset story, the CLI against a running server and against
//! a bare data folder, the folder lock, the token file and the manual clock.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::{
    InProcessServer, ServeProcess, admin, admin_json, dialin_command, raw_request, run_bounded,
};
use dialin::client::{Client, ClientError, Payload};
use dialin::datadir::DataDir;
use dialin::time::Timestamp;
use hyper::Method;
use serde_json::{Value, json};

const ALICE: &str = "alice@contoso.com";
const BOB: &str = "bob@contoso.com";
const CAROL: &str = "carol@contoso.com";
/// The default tenant's dial-in number.
const TENANT_NUMBER: &str = "+14255550100";

/// Every route of the admin API: method, the router's path template, and a
/// concrete path to call it with.
const ROUTES: &[(&str, &str, &str)] = &[
    ("GET", "/api/tenant", "/api/tenant"),
    ("PATCH", "/api/tenant", "/api/tenant"),
    ("POST", "/api/tenant/numbers", "/api/tenant/numbers"),
    (
        "DELETE",
        "/api/tenant/numbers/{number}",
        "/api/tenant/numbers/+14255550100",
    ),
    ("GET", "/api/users", "/api/users"),
    ("POST", "/api/users", "/api/users"),
    ("POST", "/api/users/import", "/api/users/import"),
    ("GET", "/api/users/{email}", "/api/users/alice@contoso.com"),
    (
        "POST",
        "/api/users/{email}/enable",
        "/api/users/alice@contoso.com/enable",
    ),
    (
        "POST",
        "/api/users/{email}/disable",
        "/api/users/alice@contoso.com/disable",
    ),
    (
        "POST",
        "/api/users/{email}/reset-id",
        "/api/users/alice@contoso.com/reset-id",
    ),
    (
        "PUT",
        "/api/users/{email}/conference-id",
        "/api/users/alice@contoso.com/conference-id",
    ),
    (
        "POST",
        "/api/users/{email}/reset-pin",
        "/api/users/alice@contoso.com/reset-pin",
    ),
    (
        "POST",
        "/api/users/{email}/send-info",
        "/api/users/alice@contoso.com/send-info",
    ),
    ("GET", "/api/meetings", "/api/meetings"),
    ("POST", "/api/meetings", "/api/meetings"),
    ("GET", "/api/meetings/{id}", "/api/meetings/1"),
    ("GET", "/api/migrations", "/api/migrations"),
    ("POST", "/api/migrations", "/api/migrations"),
    ("POST", "/api/migrations/run", "/api/migrations/run"),
    ("GET", "/api/migrations/{id}", "/api/migrations/1"),
    ("GET", "/api/outbox", "/api/outbox"),
    ("POST", "/api/outbox/deliver", "/api/outbox/deliver"),
    ("GET", "/api/outbox/{id}", "/api/outbox/1"),
    ("GET", "/api/revocations", "/api/revocations"),
    ("GET", "/api/directory/check", "/api/directory/check"),
    ("GET", "/api/directory/{id}", "/api/directory/1234567"),
    ("GET", "/api/calls", "/api/calls"),
    ("GET", "/api/calls/{call_id}", "/api/calls/abc@127.0.0.1"),
    ("GET", "/api/guard", "/api/guard"),
    ("GET", "/api/metrics", "/api/metrics"),
    ("GET", "/api/bridge", "/api/bridge"),
    ("GET", "/api/rooms/{conference_id}", "/api/rooms/7654321"),
    ("GET", "/api/clock", "/api/clock"),
    ("POST", "/api/clock/advance", "/api/clock/advance"),
];

/// Besides the routes: an unknown path must not answer differently without a
/// token (that would tell a stranger which routes exist).
const UNKNOWN_ROUTE: (&str, &str) = ("GET", "/api/no-such-thing");

// ------------------------------------------------------------------ helpers

/// The (method, template) pairs `router()` in src/net/http.rs declares, read
/// from its source so that a route added there fails this test until it is
/// added to [`ROUTES`].
fn routes_declared_in_source() -> BTreeSet<(String, String)> {
    let source = include_str!("../src/net/http.rs");
    let mut declared = BTreeSet::new();
    for call in source.split(".route(").skip(1) {
        let path = call
            .split('"')
            .nth(1)
            .expect("a .route( call starts with its path literal");
        // The arguments end at the parenthesis that closes `.route(`.
        let mut depth = 1;
        let end = call
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                depth == 0
            })
            .map(|(i, _)| i)
            .expect("a .route( call is closed");
        let arguments = &call[..end];
        for method in ["get", "post", "put", "patch", "delete"] {
            let called = arguments
                .match_indices(&format!("{method}("))
                .any(|(i, _)| {
                    arguments[..i]
                        .chars()
                        .next_back()
                        .is_none_or(|c| !c.is_alphanumeric() && c != '_')
                });
            if called {
                declared.insert((method.to_ascii_uppercase(), path.to_string()));
            }
        }
    }
    declared
}

fn bearer(token: &str) -> Vec<u8> {
    format!("Authorization: Bearer {token}").into_bytes()
}

/// A body for a raw request of this method.
fn raw_body(method: &str) -> &'static [u8] {
    if method == "GET" || method == "DELETE" {
        b""
    } else {
        b"{}"
    }
}

/// Sends every route (and an unknown path) with these extra header lines and
/// checks each answer is a JSON 401 with `WWW-Authenticate: Bearer` whose
/// message contains `says`; then checks, with the right token, that none of
/// those requests changed anything.
async fn assert_every_route_refuses(headers: &[&[u8]], says: &str) {
    let server = InProcessServer::start().await;
    let before = state(&server.client()).await;
    let routes = ROUTES
        .iter()
        .map(|&(method, _, path)| (method, path))
        .chain([UNKNOWN_ROUTE]);
    for (method, path) in routes {
        let mut lines = vec![b"Content-Type: application/json".as_slice()];
        lines.extend_from_slice(headers);
        let answer = raw_request(server.addr, method, path, &lines, raw_body(method)).await;
        let shown: Vec<_> = headers.iter().map(|h| String::from_utf8_lossy(h)).collect();
        let what = format!("{method} {path} with {shown:?}");
        assert_eq!(answer.status, 401, "{what}: {answer:?}");
        assert_eq!(answer.header("www-authenticate"), Some("Bearer"), "{what}");
        assert!(
            answer
                .header("content-type")
                .is_some_and(|t| t.starts_with("application/json")),
            "{what}: {answer:?}"
        );
        let error = &answer.json()["error"];
        assert_eq!(error["code"], "unauthorized", "{what}");
        let message = error["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{what}: {message}");
    }
    assert_eq!(
        state(&server.client()).await,
        before,
        "refused requests changed nothing"
    );
}

async fn get(client: &Client, path: &str) -> Value {
    client
        .get(path)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

async fn call(client: &Client, method: Method, path: &str, body: Value) -> Value {
    let what = format!("{method} {path}");
    client
        .call(method, path, Payload::Json(body))
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Calls a route that must fail with `status` and `code`; returns the message.
async fn refused(
    client: &Client,
    method: Method,
    path: &str,
    payload: Payload,
    status: u16,
    code: &str,
) -> String {
    let what = format!("{method} {path}");
    match client.call(method, path, payload).await {
        Err(ClientError::Api {
            status: got,
            code: got_code,
            message,
        }) => {
            assert_eq!(
                (got, got_code.as_str()),
                (status, code),
                "{what}: {message}"
            );
            assert!(!message.is_empty(), "{what}: an error says what went wrong");
            message
        }
        other => panic!("{what}: expected {status} {code}, got {other:?}"),
    }
}

fn user_path(email: &str, action: &str) -> String {
    format!("/api/users/{email}{action}")
}

/// Enables a Microsoft user; returns the answer.
async fn enable(client: &Client, email: &str) -> Value {
    call(
        client,
        Method::POST,
        &user_path(email, "/enable"),
        json!({}),
    )
    .await
}

/// Enables a user of the third-party provider "PGi" with this conference ID.
async fn enable_third_party(client: &Client, email: &str, id: &str) -> Value {
    let body = json!({
        "provider": {"kind": "third-party", "name": "PGi", "numbers": ["+18005550199"]},
        "conference_id": id,
    });
    call(client, Method::POST, &user_path(email, "/enable"), body).await
}

async fn reset_id(client: &Client, email: &str) -> Value {
    call(
        client,
        Method::POST,
        &user_path(email, "/reset-id"),
        json!({}),
    )
    .await
}

fn conference_id(user: &Value) -> String {
    user["conference_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no conference_id in {user}"))
        .to_string()
}

fn assert_microsoft_id(id: &str) {
    assert!(
        id.len() == 7 && id.bytes().all(|b| b.is_ascii_digit()),
        "'{id}' is a 7-digit conference ID"
    );
}

async fn lookup(client: &Client, id: &str) -> Value {
    get(client, &format!("/api/directory/{id}")).await
}

/// Everything an admin write could change, as the API shows it.
async fn state(client: &Client) -> Value {
    let users = get(client, "/api/users").await;
    let revocations = get(client, "/api/revocations").await;
    let mut ids = BTreeSet::new();
    for user in users.as_array().expect("users are a list") {
        for field in ["conference_id", "previous_conference_id"] {
            if let Some(id) = user[field].as_str() {
                ids.insert(id.to_string());
            }
        }
    }
    for revocation in revocations.as_array().expect("revocations are a list") {
        ids.insert(conference_id(revocation));
    }
    let mut directory = Vec::new();
    for id in &ids {
        directory.push(lookup(client, id).await);
    }
    json!({
        "tenant": get(client, "/api/tenant").await,
        "users": users,
        "meetings": get(client, "/api/meetings").await,
        "migrations": get(client, "/api/migrations").await,
        "outbox": get(client, "/api/outbox").await,
        "revocations": revocations,
        "directory": directory,
    })
}

/// Imports a CSV whose line 3 is wrong: 400 naming line 3, and no user of
/// any line was imported.
async fn assert_import_refused_at_line_3(csv: &str, names: &str) {
    let server = InProcessServer::start().await;
    let client = server.client();
    let before = state(&client).await;
    let path = "/api/users/import";
    let payload = Payload::Csv(csv.into());
    let message = refused(&client, Method::POST, path, payload, 400, "invalid").await;
    assert!(
        message.contains("line 3") && message.contains(names),
        "{message}"
    );
    assert_eq!(state(&client).await, before, "not even line 2 was imported");
}

/// The emails to `to` of this kind.
async fn emails(client: &Client, to: &str, kind: &str) -> Vec<Value> {
    get(client, &format!("/api/outbox?to={to}"))
        .await
        .as_array()
        .expect("the outbox is a list")
        .iter()
        .filter(|e| e["kind"] == kind)
        .cloned()
        .collect()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The names in a folder, with their sizes (files) — to show nothing was written.
fn listing(dir: &Path) -> BTreeSet<(String, u64)> {
    std::fs::read_dir(dir)
        .expect("the folder is readable")
        .map(|e| {
            let e = e.expect("a readable entry");
            let meta = e.metadata().expect("readable metadata");
            let size = if meta.is_file() { meta.len() } else { 0 };
            (e.file_name().to_string_lossy().into_owned(), size)
        })
        .collect()
}

fn timestamp(value: &Value) -> Timestamp {
    serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{value}: {e}"))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

// ------------------------------------------------------------------ 1. who may call

#[test]
fn the_route_list_matches_the_router() {
    let listed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|&(method, template, _)| (method.to_string(), template.to_string()))
        .collect();
    let declared = routes_declared_in_source();
    assert!(!declared.is_empty(), "the router's routes were found");
    let unlisted: Vec<_> = declared.difference(&listed).collect();
    assert!(
        unlisted.is_empty(),
        "add these routes of src/net/http.rs to ROUTES: {unlisted:?}"
    );
    let gone: Vec<_> = listed.difference(&declared).collect();
    assert!(
        gone.is_empty(),
        "ROUTES lists routes the router no longer has: {gone:?}"
    );
}

#[tokio::test]
async fn every_listed_route_is_served() {
    let server = InProcessServer::start().await;
    let token = bearer(&server.token);
    for &(method, _, path) in ROUTES {
        let lines = [
            token.as_slice(),
            b"Content-Type: application/json".as_slice(),
        ];
        let answer = raw_request(server.addr, method, path, &lines, raw_body(method)).await;
        let body = String::from_utf8_lossy(&answer.body);
        assert!(
            answer.status != 405 && !body.contains("no such API route"),
            "{method} {path} is not a route: {} {body}",
            answer.status
        );
    }
}

#[tokio::test]
async fn every_route_refuses_a_request_without_authorization() {
    assert_every_route_refuses(&[], "missing bearer token").await;
}

#[tokio::test]
async fn every_route_refuses_a_wrong_token() {
    assert_every_route_refuses(&[b"Authorization: Bearer wrong"], "wrong bearer token").await;
    // As long as a real one, so the comparison runs over every byte.
    let same_length = format!("Authorization: Bearer {}", "f".repeat(64));
    assert_every_route_refuses(&[same_length.as_bytes()], "wrong bearer token").await;
}

#[tokio::test]
async fn every_route_refuses_a_basic_authorization_header() {
    assert_every_route_refuses(&[b"Authorization: Basic xyz"], "malformed").await;
}

#[tokio::test]
async fn every_route_refuses_a_bearer_header_without_a_token() {
    assert_every_route_refuses(&[b"Authorization: Bearer"], "malformed").await;
}

#[tokio::test]
async fn every_route_refuses_a_header_that_is_not_text() {
    assert_every_route_refuses(&[b"Authorization: Bearer t\xf6k\xe9n"], "malformed").await;
}

// ------------------------------------------------------------------ 2. bad input: 400 and 404

#[tokio::test]
async fn a_malformed_json_body_is_400_naming_the_body() {
    let server = InProcessServer::start().await;
    let token = bearer(&server.token);
    let lines = [
        token.as_slice(),
        b"Content-Type: application/json".as_slice(),
    ];
    let path = user_path(ALICE, "/enable");
    let answer = raw_request(server.addr, "POST", &path, &lines, b"{\"display_name\": ").await;
    assert_eq!(answer.status, 400, "{answer:?}");
    let error = &answer.json()["error"];
    assert_eq!(error["code"], "invalid");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("request body") && message.contains("EOF"),
        "{message}"
    );
    refused(
        &server.client(),
        Method::GET,
        &user_path(ALICE, ""),
        Payload::None,
        404,
        "unknown-user",
    )
    .await;
}

#[tokio::test]
async fn an_unknown_json_field_is_400_naming_the_field() {
    let server = InProcessServer::start().await;
    let client = server.client();
    let body = Payload::Json(json!({"colour": "red"}));
    let path = user_path(ALICE, "/enable");
    let message = refused(&client, Method::POST, &path, body, 400, "invalid").await;
    assert!(message.contains("unknown field `colour`"), "{message}");

    let patch = Payload::Json(json!({"conference_id_mode": "dynamic-only", "colour": "red"}));
    let message = refused(&client, Method::PATCH, "/api/tenant", patch, 400, "invalid").await;
    assert!(message.contains("colour"), "{message}");
    assert_eq!(
        get(&client, "/api/tenant").await["conference_id_mode"],
        "static",
        "a refused patch applies none of its fields"
    );
}

#[tokio::test]
async fn a_bad_email_in_the_path_is_400_naming_it() {
    let server = InProcessServer::start().await;
    let client = server.client();
    for (method, action) in [(Method::GET, ""), (Method::POST, "/reset-id")] {
        let path = user_path("not-an-email", action);
        let message = refused(&client, method, &path, Payload::None, 400, "invalid").await;
        assert!(
            message.contains("'not-an-email' is not an email address"),
            "{message}"
        );
    }
}

#[tokio::test]
async fn a_bad_conference_id_in_set_id_is_400_naming_it() {
    let server = InProcessServer::start().await;
    let client = server.client();
    enable(&client, ALICE).await;
    let before = state(&client).await;
    let path = user_path(ALICE, "/conference-id");

    let letters = Payload::Json(json!({"conference_id": "12a4567"}));
    let message = refused(&client, Method::PUT, &path, letters, 400, "invalid").await;
    assert!(
        message.contains("'12a4567'") && message.contains("'a'"),
        "{message}"
    );

    let short = Payload::Json(json!({"conference_id": "123"}));
    let message = refused(&client, Method::PUT, &path, short, 400, "invalid").await;
    assert!(
        message.contains("123") && message.contains("exactly 7"),
        "{message}"
    );

    let missing = Payload::Json(json!({}));
    let message = refused(&client, Method::PUT, &path, missing, 400, "invalid").await;
    assert!(message.contains("conference_id"), "{message}");

    assert_eq!(state(&client).await, before, "nothing changed");
}

#[tokio::test]
async fn a_bad_phone_number_is_400_naming_it() {
    let server = InProcessServer::start().await;
    let client = server.client();
    let before = state(&client).await;

    let body = Payload::Json(json!({"number": "+1-425-CALL-NOW"}));
    let message = refused(
        &client,
        Method::POST,
        "/api/tenant/numbers",
        body,
        400,
        "invalid",
    )
    .await;
    assert!(
        message.contains("'+1-425-CALL-NOW'") && message.contains("E.164"),
        "{message}"
    );

    let path = "/api/tenant/numbers/0800-nope";
    let message = refused(&client, Method::DELETE, path, Payload::None, 400, "invalid").await;
    assert!(message.contains("'0800-nope'"), "{message}");

    assert_eq!(state(&client).await, before, "nothing changed");
}

#[tokio::test]
async fn an_unknown_query_parameter_is_400_naming_it() {
    let server = InProcessServer::start().await;
    let client = server.client();
    let path = "/api/users?colour=red";
    let message = refused(&client, Method::GET, path, Payload::None, 400, "invalid").await;
    assert!(
        message.contains("unknown query parameter 'colour'") && message.contains("enabled"),
        "{message}"
    );
    let path = "/api/users?enabled=perhaps";
    let message = refused(&client, Method::GET, path, Payload::None, 400, "invalid").await;
    assert!(message.contains("'perhaps'"), "{message}");
}

#[tokio::test]
async fn an_import_without_the_csv_content_type_is_400() {
    let server = InProcessServer::start().await;
    let token = bearer(&server.token);
    let lines = [token.as_slice(), b"Content-Type: text/plain".as_slice()];
    let csv = b"email\nbob@contoso.com\n";
    let answer = raw_request(server.addr, "POST", "/api/users/import", &lines, csv).await;
    assert_eq!(answer.status, 400, "{answer:?}");
    let message = answer.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("Content-Type: text/csv") && message.contains("text/plain"),
        "{message}"
    );
    let users = get(&server.client(), "/api/users").await;
    assert_eq!(users, json!([]), "nothing was imported");
}

#[tokio::test]
async fn an_import_with_an_unparsable_line_3_is_400_and_imports_nothing() {
    let csv = "email,display_name\nbob@contoso.com,Bob\nnot-an-email,Carol\n";
    assert_import_refused_at_line_3(csv, "not-an-email").await;
}

#[tokio::test]
async fn an_import_with_a_refused_user_on_line_3_is_400_and_imports_nothing() {
    // Line 2 is enabled inside the transaction before line 3 is refused.
    let csv = "email,provider\nbob@contoso.com,microsoft\ncarol@contoso.com,PGi\n";
    assert_import_refused_at_line_3(csv, "conference ID by hand").await;
}

#[tokio::test]
async fn an_unknown_user_is_404() {
    let server = InProcessServer::start().await;
    let client = server.client();
    for (method, action) in [(Method::GET, ""), (Method::POST, "/reset-id")] {
        let path = user_path("nobody@contoso.com", action);
        let message = refused(&client, method, &path, Payload::None, 404, "unknown-user").await;
        assert!(message.contains("nobody@contoso.com"), "{message}");
    }
}

#[tokio::test]
async fn an_unknown_route_is_404() {
    let server = InProcessServer::start().await;
    let client = server.client();
    let (method, path) = UNKNOWN_ROUTE;
    let method: Method = method.parse().expect("a method");
    let message = refused(&client, method, path, Payload::None, 404, "not-found").await;
    assert!(message.contains(path), "{message}");
}

// ------------------------------------------------------------------ 2. refused operations: 409

#[tokio::test]
async fn reset_id_of_a_third_party_user_is_409_and_changes_nothing() {
    let server = InProcessServer::start().await;
    let client = server.client();
    enable_third_party(&client, CAROL, "12345678").await;
    let before = state(&client).await;

    let path = user_path(CAROL, "/reset-id");
    let message = refused(
        &client,
        Method::POST,
        &path,
        Payload::None,
        409,
        "third-party-provider",
    )
    .await;
    assert!(
        message.contains("PGi") && message.contains("set-id"),
        "{message}"
    );
    assert_eq!(state(&client).await, before, "nothing changed");
    assert_eq!(lookup(&client, "12345678").await["status"], "valid");
}

#[tokio::test]
async fn reset_id_in_a_dynamic_only_tenant_is_409_and_changes_nothing() {
    let server = InProcessServer::start().await;
    let client = server.client();
    let id = conference_id(&enable(&client, ALICE).await["user"]);
    let patch = json!({"conference_id_mode": "dynamic-only"});
    let tenant = call(&client, Method::PATCH, "/api/tenant", patch).await;
    assert_eq!(tenant["conference_id_mode"], "dynamic-only");
    let before = state(&client).await;

    let path = user_path(ALICE, "/reset-id");
    let message = refused(
        &client,
        Method::POST,
        &path,
        Payload::None,
        409,
        "dynamic-only-tenant",
    )
    .await;
    assert!(message.contains("dynamic conference IDs only"), "{message}");
    assert_eq!(state(&client).await, before, "nothing changed");
    assert_eq!(lookup(&client, &id).await["status"], "valid");
}

#[tokio::test]
async fn set_id_to_an_id_in_use_is_409_and_changes_nothing() {
    let server = InProcessServer::start().await;
    let client = server.client();
    let alice = enable(&client, ALICE).await["user"].clone();
    let alices_id = conference_id(&alice);
    enable(&client, BOB).await;
    let before = state(&client).await;

    let path = user_path(BOB, "/conference-id");
    let body = Payload::Json(json!({"conference_id": alices_id}));
    let message = refused(
        &client,
        Method::PUT,
        &path,
        body,
        409,
        "conference-id-in-use",
    )
    .await;
    assert!(
        message.contains(&alices_id) && message.contains(ALICE),
        "{message}"
    );
    assert_eq!(state(&client).await, before, "nothing changed");
    let found = lookup(&client, &alices_id).await;
    assert_eq!(
        (&found["status"], &found["organizer_id"]),
        (&json!("valid"), &alice["id"]),
        "the ID still reaches alice"
    );
}

#[tokio::test]
async fn set_id_to_a_revoked_id_is_409_and_changes_nothing() {
    let server = InProcessServer::start().await;
    let client = server.client();
    let old = conference_id(&enable(&client, ALICE).await["user"]);
    reset_id(&client, ALICE).await;
    enable(&client, BOB).await;
    let before = state(&client).await;

    let path = user_path(BOB, "/conference-id");
    let body = Payload::Json(json!({"conference_id": old}));
    let message = refused(
        &client,
        Method::PUT,
        &path,
        body,
        409,
        "conference-id-revoked",
    )
    .await;
    assert!(
        message.contains(&old) && message.contains("never issued again"),
        "{message}"
    );
    assert_eq!(state(&client).await, before, "nothing changed");
    assert_eq!(lookup(&client, &old).await["status"], "revoked");
}

#[tokio::test]
async fn enabling_a_third_party_user_as_microsoft_needs_replace_provider() {
    let server = InProcessServer::start().await;
    let client = server.client();
    enable_third_party(&client, CAROL, "12345678").await;
    let before = state(&client).await;

    let path = user_path(CAROL, "/enable");
    let microsoft = Payload::Json(json!({"provider": {"kind": "microsoft"}}));
    let message = refused(
        &client,
        Method::POST,
        &path,
        microsoft,
        409,
        "provider-conflict",
    )
    .await;
    assert!(
        message.contains("PGi") && message.contains("--replace-provider"),
        "{message}"
    );
    assert_eq!(state(&client).await, before, "nothing changed");

    let replace = json!({"provider": {"kind": "microsoft"}, "replace_provider": true});
    let moved = call(&client, Method::POST, &path, replace).await;
    assert_eq!(moved["user"]["provider"]["kind"], "microsoft");
    assert_eq!(moved["revoked"], json!(["12345678"]));
}

// ------------------------------------------------------------------ 3. the reset story

#[tokio::test]
async fn reset_id_revokes_the_old_id_before_answering() {
    let server = InProcessServer::start().await;
    let client = server.client();
    let enabled = enable(&client, ALICE).await;
    let old = conference_id(&enabled["user"]);
    assert_microsoft_id(&old);
    let found = lookup(&client, &old).await;
    assert_eq!(found["status"], "valid");
    assert_eq!(found["organizer_id"], enabled["user"]["id"]);

    let reset = reset_id(&client, ALICE).await;
    let new = reset["new_conference_id"].as_str().expect("a new ID");
    assert_microsoft_id(new);
    assert_ne!(new, old);
    assert_eq!(reset["old_conference_id"], old.as_str());

    let was = lookup(&client, &old).await;
    assert_eq!(was["status"], "revoked", "{was}");
    assert_eq!(was["cause"], "reset-id");
    assert_eq!(was["operation_id"], reset["revocation_operation"]);
    assert_eq!(lookup(&client, new).await["status"], "valid");
    assert_eq!(
        get(&client, &user_path(ALICE, "")).await["conference_id"],
        new
    );
}

#[tokio::test]
async fn reset_id_emails_the_new_id_and_numbers_but_no_pin() {
    let server = InProcessServer::start().await;
    let client = server.client();
    let enabled = enable(&client, ALICE).await;
    let (old, pin) = (
        conference_id(&enabled["user"]),
        enabled["leader_pin"]
            .as_str()
            .expect("a new PIN")
            .to_string(),
    );
    let reset = reset_id(&client, ALICE).await;
    let new = reset["new_conference_id"].as_str().expect("a new ID");

    let resets = emails(&client, ALICE, "id-reset").await;
    assert_eq!(resets.len(), 1, "one id-reset email: {resets:?}");
    assert_eq!(resets[0]["id"], reset["email_id"]);
    let email = get(&client, &format!("/api/outbox/{}", resets[0]["id"])).await;
    let body = email["body"].as_str().expect("show has the body");
    assert!(body.contains(new), "{body}");
    assert!(body.contains(TENANT_NUMBER), "{body}");
    // The PIN's digits may occur inside the IDs or the number by chance.
    let rest = [old.as_str(), new, TENANT_NUMBER]
        .iter()
        .fold(body.to_string(), |text, known| text.replace(known, " "));
    assert!(!rest.contains(&pin), "the PIN {pin} is not emailed: {body}");

    assert_eq!(email["status"], "delivered", "{email}");
    let file = email["file"].as_str().expect("an .eml file name");
    let eml = std::fs::read_to_string(server.data().join("outbox").join(file))
        .unwrap_or_else(|e| panic!("outbox/{file}: {e}"));
    assert!(eml.contains(ALICE) && eml.contains(new), "{eml}");
}

#[tokio::test]
async fn reset_id_is_audited_with_the_token_as_actor() {
    let server = InProcessServer::start().await;
    let client = server.client();
    let old = conference_id(&enable(&client, ALICE).await["user"]);
    let reset = reset_id(&client, ALICE).await;

    let revocations = get(&client, "/api/revocations").await;
    let list = revocations.as_array().expect("a list");
    assert_eq!(list.len(), 1, "{revocations}");
    let revocation = &list[0];
    assert_eq!(revocation["conference_id"], old.as_str());
    assert_eq!(revocation["user"], ALICE);
    assert_eq!(revocation["cause"], "reset-id");
    assert_eq!(revocation["actor"], "admin-token");
    assert_eq!(revocation["operation_id"], reset["revocation_operation"]);
}

// ------------------------------------------------------------------ 4. the CLI with a server running

#[test]
fn cli_enable_and_show_go_through_the_running_server() {
    let data = tempfile::tempdir().expect("a data folder");
    let server = ServeProcess::start(data.path(), &[]);

    let enabled = admin_json(data.path(), &["user", "enable", ALICE]);
    let id = conference_id(&enabled["user"]);
    assert_microsoft_id(&id);

    let shown = admin_json(data.path(), &["user", "show", ALICE]);
    assert_eq!(conference_id(&shown), id);

    // The server saw it: it answers for the user over HTTP.
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let over_http = runtime.block_on(get(&server.client(), &user_path(ALICE, "")));
    assert_eq!(conference_id(&over_http), id);
}

#[test]
fn cli_tenant_show_lists_the_dial_in_numbers() {
    let data = tempfile::tempdir().expect("a data folder");
    let _server = ServeProcess::start(data.path(), &[]);
    let tenant = admin_json(data.path(), &["tenant", "show"]);
    let numbers: Vec<&Value> = tenant["dial_in_numbers"]
        .as_array()
        .expect("dial_in_numbers is a list")
        .iter()
        .map(|n| &n["number"])
        .collect();
    assert_eq!(numbers, [&json!(TENANT_NUMBER)], "{tenant}");
}

#[test]
fn cli_reset_id_changes_the_id_as_the_server_token() {
    let data = tempfile::tempdir().expect("a data folder");
    let server = ServeProcess::start(data.path(), &[]);
    let old = conference_id(&admin_json(data.path(), &["user", "enable", ALICE])["user"]);

    let reset = admin_json(data.path(), &["user", "reset-id", ALICE]);
    let new = reset["new_conference_id"].as_str().expect("a new ID");
    assert_microsoft_id(new);
    assert_ne!(new, old);
    let shown = admin_json(data.path(), &["user", "show", ALICE]);
    assert_eq!(conference_id(&shown), new);

    // Made by the server (its actor), not by a CLI that opened the folder.
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let revocations = runtime.block_on(get(&server.client(), "/api/revocations"));
    assert_eq!(revocations[0]["conference_id"], old.as_str());
    assert_eq!(revocations[0]["actor"], "admin-token", "{revocations}");
}

#[test]
fn cli_errors_go_to_stderr_with_a_nonzero_exit() {
    let data = tempfile::tempdir().expect("a data folder");
    let _server = ServeProcess::start(data.path(), &[]);
    for json in [false, true] {
        let mut args = vec!["user", "show", "nobody@contoso.com"];
        if json {
            args.push("--json");
        }
        let output = admin(data.path(), &args);
        assert!(!output.status.success(), "{args:?} fails");
        assert!(output.stdout.is_empty(), "{args:?}: nothing on stdout");
        let err = stderr(&output);
        assert!(
            err.contains("no user with email nobody@contoso.com"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn cli_with_an_explicit_server_and_token_needs_no_data_folder() {
    let data = tempfile::tempdir().expect("a data folder");
    let server = ServeProcess::start(data.path(), &[]);
    let elsewhere = tempfile::tempdir().expect("an empty working folder");
    let run = |token: &str, args: &[&str]| {
        let mut command = dialin_command();
        command
            .current_dir(elsewhere.path())
            .args(["admin", "--server", &server.url, "--token", token])
            .args(args);
        run_bounded(command)
    };

    let enabled = run(&server.token, &["user", "enable", ALICE, "--json"]);
    let enabled = common::json_stdout(&["user", "enable"], &enabled);
    let shown = run(&server.token, &["user", "show", ALICE, "--json"]);
    let shown = common::json_stdout(&["user", "show"], &shown);
    assert_eq!(conference_id(&shown), conference_id(&enabled["user"]));

    let wrong = run("not-the-token", &["user", "show", ALICE]);
    assert!(!wrong.status.success());
    assert!(
        stderr(&wrong).contains("wrong bearer token"),
        "{}",
        stderr(&wrong)
    );

    assert_eq!(
        listing(elsewhere.path()),
        BTreeSet::new(),
        "no ./dialin-data was created"
    );
}

// ------------------------------------------------------------------ 5. the CLI with no server

#[test]
fn cli_without_a_server_opens_the_folder_itself() {
    let data = tempfile::tempdir().expect("a data folder");
    let enabled = admin_json(data.path(), &["user", "enable", ALICE]);
    let id = conference_id(&enabled["user"]);
    assert_microsoft_id(&id);
    assert_eq!(
        conference_id(&admin_json(data.path(), &["user", "show", ALICE])),
        id
    );

    admin_json(data.path(), &["user", "reset-id", ALICE]);
    let revocations = admin_json(data.path(), &["revocations"]);
    assert_eq!(revocations[0]["conference_id"], id.as_str());
    assert_eq!(revocations[0]["actor"], "local-cli", "{revocations}");
    assert!(
        DataDir::existing(data.path()).read_server_info().is_none(),
        "the CLI publishes no server.json"
    );
}

#[test]
fn data_written_by_the_cli_is_served_by_a_later_server() {
    let data = tempfile::tempdir().expect("a data folder");
    let enabled = admin_json(data.path(), &["user", "enable", ALICE]);
    let id = conference_id(&enabled["user"]);

    let server = ServeProcess::start(data.path(), &[]);
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let client = server.client();
    let user = runtime.block_on(get(&client, &user_path(ALICE, "")));
    assert_eq!(conference_id(&user), id);
    let found = runtime.block_on(lookup(&client, &id));
    assert_eq!(
        found["status"], "valid",
        "the directory was rebuilt: {found}"
    );
}

// ------------------------------------------------------------------ 6. one owner per folder

#[test]
fn a_second_server_on_the_same_folder_fails_saying_in_use() {
    let data = tempfile::tempdir().expect("a data folder");
    let first = ServeProcess::start(data.path(), &[]);

    let mut second = dialin_command();
    second
        .args([
            "serve",
            "--admin",
            "127.0.0.1:0",
            "--sip",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(data.path());
    let output = run_bounded(second);
    assert!(!output.status.success(), "the second server exits");
    let err = stderr(&output);
    assert!(
        err.contains("in use") && err.contains(&first.url),
        "names the first server: {err}"
    );

    let info = DataDir::existing(data.path())
        .read_server_info()
        .expect("server.json stays");
    assert_eq!(info.pid, first.pid(), "server.json still names the first");
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(get(&first.client(), "/api/tenant"));
}

#[test]
fn cli_refuses_a_locked_folder_without_server_json_and_writes_nothing() {
    let data = tempfile::tempdir().expect("a data folder");
    let id = conference_id(&admin_json(data.path(), &["user", "enable", ALICE])["user"]);
    let before = listing(data.path());

    let lock = DataDir::existing(data.path())
        .try_lock()
        .expect("the lock file opens")
        .expect("no one else holds the lock");
    let output = admin(data.path(), &["user", "reset-id", ALICE]);
    assert!(!output.status.success(), "the CLI refuses");
    let err = stderr(&output);
    assert!(err.contains("in use"), "{err}");
    assert_eq!(listing(data.path()), before, "no file was written");
    drop(lock);

    let shown = admin_json(data.path(), &["user", "show", ALICE]);
    assert_eq!(conference_id(&shown), id, "the ID was not reset");
    assert_eq!(admin_json(data.path(), &["revocations"]), json!([]));
}

#[tokio::test]
async fn stopping_the_server_removes_server_json_and_frees_the_folder() {
    let server = InProcessServer::start().await;
    let running = DataDir::existing(server.data());
    let info = running.read_server_info().expect("published while running");
    assert_eq!(info.admin_url, server.url());
    assert!(
        running.try_lock().expect("lock file").is_none(),
        "held while running"
    );

    let (result, data) = server.stop().await;
    assert!(result.is_ok(), "{result:?}");
    let stopped = DataDir::existing(data.path());
    assert!(
        stopped.read_server_info().is_none(),
        "server.json is removed"
    );
    assert!(
        stopped.try_lock().expect("lock file").is_some(),
        "the lock is released"
    );
}

// ------------------------------------------------------------------ 7. the token file

#[tokio::test]
async fn the_token_file_a_server_creates_is_private() {
    let server = InProcessServer::start().await;
    let path = DataDir::existing(server.data()).token_path();
    assert_eq!(mode(&path), 0o600);
}

#[test]
fn the_token_file_the_cli_creates_is_private() {
    let data = tempfile::tempdir().expect("a data folder");
    admin_json(data.path(), &["tenant", "show"]);
    let path = DataDir::existing(data.path()).token_path();
    assert_eq!(mode(&path), 0o600);
}

// ------------------------------------------------------------------ 8. the manual clock

#[test]
fn advancing_a_manual_clock_runs_the_due_migration() {
    let data = tempfile::tempdir().expect("a data folder");
    let server = ServeProcess::start(data.path(), &["--clock", "manual"]);
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let client = server.client();
        assert_eq!(get(&client, "/api/clock").await["manual"], true);
        enable(&client, ALICE).await;
        let schedule = json!({"organizer": ALICE, "subject": "Weekly sync", "start": "+1d"});
        let meeting = call(&client, Method::POST, "/api/meetings", schedule).await;
        let meeting_path = format!("/api/meetings/{}", meeting["id"]);

        let reset = reset_id(&client, ALICE).await;
        let new = reset["new_conference_id"].as_str().expect("a new ID");
        let job = &reset["migration_job"];
        assert_eq!(job["state"], "pending", "{reset}");
        let job_path = format!("/api/migrations/{}", job["id"]);
        assert_eq!(get(&client, &meeting_path).await["invitation"], "stale");

        let before = timestamp(&get(&client, "/api/clock").await["now"]);
        let by = json!({"by": "2h"});
        let advanced = call(&client, Method::POST, "/api/clock/advance", by).await;
        let after = timestamp(&advanced["now"]);
        assert_eq!(after.saturating_sub(before), Duration::from_secs(2 * 3600));

        let job = get(&client, &job_path).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        assert_eq!(job["meetings_updated"], 1, "{job}");
        let meeting = get(&client, &meeting_path).await;
        assert_eq!(meeting["invitation"], "migrated", "{meeting}");
        assert_eq!(meeting["conference_id"], new);
        let updates = emails(&client, ALICE, "meeting-update").await;
        assert_eq!(updates.len(), 1, "{updates:?}");
        let update = get(&client, &format!("/api/outbox/{}", updates[0]["id"])).await;
        let body = update["body"].as_str().expect("show has the body");
        assert!(body.contains(new) && body.contains("Weekly sync"), "{body}");
    });
}

#[tokio::test]
async fn advancing_a_real_clock_is_409() {
    let server = InProcessServer::start().await;
    let client = server.client();
    assert_eq!(get(&client, "/api/clock").await["manual"], false);
    let by = Payload::Json(json!({"by": "2h"}));
    let message = refused(
        &client,
        Method::POST,
        "/api/clock/advance",
        by,
        409,
        "real-clock",
    )
    .await;
    assert!(message.contains("--clock manual"), "{message}");
}

// ------------------------------------------------------------------ protocol details

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let server = InProcessServer::start().await;
    let header = format!("Authorization: bEaReR {}", server.token).into_bytes();
    let answer = raw_request(server.addr, "GET", "/api/tenant", &[header.as_slice()], b"").await;
    assert_eq!(answer.status, 200, "{answer:?}");
}

#[tokio::test]
async fn the_csv_media_type_is_case_insensitive() {
    let server = InProcessServer::start().await;
    let token = bearer(&server.token);
    let lines = [
        token.as_slice(),
        b"Content-Type: Text/CSV; charset=utf-8".as_slice(),
    ];
    let answer = raw_request(
        server.addr,
        "POST",
        "/api/users/import",
        &lines,
        b"email\nbob@contoso.com\n",
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
}

#[tokio::test]
async fn errors_axum_answers_itself_are_json_too() {
    let server = InProcessServer::start().await;
    let token = bearer(&server.token);
    let json_error = |answer: &common::RawResponse| {
        assert!(
            answer
                .header("content-type")
                .is_some_and(|t| t.starts_with("application/json")),
            "{answer:?}"
        );
        answer.json()["error"].clone()
    };

    let answer = raw_request(
        server.addr,
        "DELETE",
        "/api/users",
        &[token.as_slice()],
        b"",
    )
    .await;
    assert_eq!(answer.status, 405);
    let error = json_error(&answer);
    assert_eq!(error["code"], "method-not-allowed");
    assert!(
        error["message"].as_str().unwrap().contains("DELETE"),
        "{error}"
    );
    assert!(
        answer.header("allow").is_some(),
        "405 keeps its Allow header"
    );

    let answer = raw_request(
        server.addr,
        "GET",
        "/api/users/%FF",
        &[token.as_slice()],
        b"",
    )
    .await;
    assert_eq!(answer.status, 400);
    assert_eq!(json_error(&answer)["code"], "invalid");

    let big = vec![b' '; 3 << 20];
    let lines = [
        token.as_slice(),
        b"Content-Type: application/json".as_slice(),
    ];
    let answer = raw_request(server.addr, "PATCH", "/api/tenant", &lines, &big).await;
    assert_eq!(answer.status, 413);
    let error = json_error(&answer);
    assert_eq!(error["code"], "too-large");
    assert!(
        error["message"].as_str().unwrap().contains("MiB"),
        "{error}"
    );
}

#[tokio::test]
async fn a_csv_import_larger_than_a_json_body_is_accepted() {
    let server = InProcessServer::start().await;
    let mut csv = String::from("email,display_name\n");
    let mut n = 0;
    while csv.len() < (5 << 20) / 2 {
        csv.push_str(&format!(
            "user{n}@contoso.com,User Number {n} with a long display name\n"
        ));
        n += 1;
    }
    assert!(csv.len() > 2 << 20, "bigger than the 2 MiB JSON limit");
    let report = server
        .client()
        .call(
            Method::POST,
            "/api/users/import?no_email=true",
            Payload::Csv(csv),
        )
        .await
        .expect("a large import is accepted");
    assert_eq!(report["created"], n);
}

#[test]
fn sigterm_stops_the_server_cleanly_and_frees_the_folder() {
    let data = tempfile::tempdir().unwrap();
    let mut server = ServeProcess::start(data.path(), &[]);
    let status = server.terminate();
    assert!(status.success(), "exit 0 on SIGTERM: {status}");
    let dir = DataDir::existing(data.path());
    assert!(dir.read_server_info().is_none(), "server.json is removed");
    assert!(
        dir.try_lock().unwrap().is_some(),
        "the folder's lock is free"
    );
}
