//! The admin API client the CLI uses: the same requests either go over HTTP
//! to a running server, or straight into an in-process router over a data
//! folder the CLI opened itself. One code path answers both.

use axum::Router;
use axum::body::Body;
use http_body_util::BodyExt;
use hyper::{Method, Request, StatusCode, header};
use serde_json::Value;
use tower::ServiceExt;

/// What went wrong with a call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error.
    #[error("{message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("{0}")]
    Transport(String),
}

/// A request body.
#[derive(Debug, Clone)]
pub enum Payload {
    None,
    Json(Value),
    Csv(String),
}

enum Target {
    Remote { authority: String },
    Local(Router),
}

pub struct Client {
    target: Target,
    token: String,
}

impl Client {
    /// A client for the server at `url` (`http://HOST:PORT`).
    pub fn remote(url: &str, token: String) -> Result<Client, ClientError> {
        let authority = url
            .strip_prefix("http://")
            .map(|rest| rest.trim_end_matches('/'))
            .filter(|a| !a.is_empty() && !a.contains('/'))
            .ok_or_else(|| {
                ClientError::Transport(format!(
                    "'{url}' is not an admin API URL: write http://HOST:PORT, e.g. http://127.0.0.1:8080"
                ))
            })?;
        Ok(Client {
            target: Target::Remote {
                authority: authority.to_string(),
            },
            token,
        })
    }

    /// A client that calls `router` in this process.
    pub fn local(router: Router, token: String) -> Client {
        Client {
            target: Target::Local(router),
            token,
        }
    }

    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.call(Method::GET, path, Payload::None).await
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        payload: Payload,
    ) -> Result<Value, ClientError> {
        let builder = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token));
        let (builder, body) = match payload {
            Payload::None => (builder, Vec::new()),
            Payload::Json(v) => (
                builder.header(header::CONTENT_TYPE, "application/json"),
                serde_json::to_vec(&v).expect("a Value always serializes"),
            ),
            Payload::Csv(text) => (
                builder.header(header::CONTENT_TYPE, "text/csv"),
                text.into_bytes(),
            ),
        };
        let (status, bytes) = match &self.target {
            Target::Local(router) => {
                let request = builder
                    .body(Body::from(body))
                    .map_err(|e| ClientError::Transport(format!("building the request: {e}")))?;
                let response = router
                    .clone()
                    .oneshot(request)
                    .await
                    .unwrap_or_else(|never| match never {});
                let status = response.status();
                let bytes = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| ClientError::Transport(e.to_string()))?
                    .to_bytes();
                (status, bytes)
            }
            Target::Remote { authority } => {
                let request = builder
                    .header(header::HOST, authority.as_str())
                    .body(http_body_util::Full::new(axum::body::Bytes::from(body)))
                    .map_err(|e| ClientError::Transport(format!("building the request: {e}")))?;
                send_remote(authority, request).await?
            }
        };
        let value: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|e| {
                ClientError::Transport(format!(
                    "the server answered {status} with a body that is not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                ))
            })?
        };
        if status.is_success() {
            return Ok(value);
        }
        let field = |name: &str| {
            value["error"][name]
                .as_str()
                .unwrap_or_default()
                .to_string()
        };
        Err(ClientError::Api {
            status: status.as_u16(),
            code: field("code"),
            message: match field("message") {
                m if m.is_empty() => format!("the server answered {status}"),
                m => m,
            },
        })
    }
}

async fn send_remote(
    authority: &str,
    request: Request<http_body_util::Full<axum::body::Bytes>>,
) -> Result<(StatusCode, axum::body::Bytes), ClientError> {
    let unreachable = |e: &dyn std::fmt::Display| {
        ClientError::Transport(format!(
            "can't reach the admin API at http://{authority}: {e}"
        ))
    };
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| unreachable(&e))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(&e))?;
    let driver = tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| unreachable(&e))?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| unreachable(&e))?
        .to_bytes();
    driver.abort();
    Ok((status, bytes))
}

/// Escapes a path segment (an email's `@` and `+` stay readable; others are encoded).
pub fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'@' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
