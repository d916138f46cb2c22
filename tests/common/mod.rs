//! Harnesses for the black-box tests: a server running inside the test's
//! runtime, a spawned `dialin serve` process, the `dialin` CLI, and raw
//! HTTP/1.1 over loopback. Every server gets its own temporary data folder
//! and binds `127.0.0.1:0`.
//!
//! The process helpers block the calling thread: don't call them while an
//! [`InProcessServer`] runs on a current-thread runtime (it could not answer).

// Each test crate that includes this module uses its own part of it.
#![allow(dead_code)]

pub mod bridge;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use dialin::client::Client;
use dialin::datadir::DataDir;
use dialin::net::server::{ServeOptions, Server};
use serde_json::Value;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a spawned process may take to start or finish before the test fails.
const PROCESS_DEADLINE: Duration = Duration::from_secs(20);
/// The pause between two looks at a spawned process.
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// At most this many looks, whatever the clock says.
const MAX_POLLS: u32 = 2_000;
/// How long one raw HTTP exchange may take.
const HTTP_DEADLINE: Duration = Duration::from_secs(10);

pub fn loopback_any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// The first of `count` UDP ports on loopback, `step` apart from an even
/// first port, that were all free a moment ago. They come from 20000-29999,
/// below Linux's default ephemeral range (32768 and up, see
/// `net.ipv4.ip_local_port_range`), so no other test's `bind(0)` takes one
/// between this check and the bind that needs it.
pub fn free_udp_ports(count: u16, step: u16) -> u16 {
    for _ in 0..200 {
        let first = 2 * rand::random_range(10_000u16..15_000 - count * step / 2);
        let held: Vec<_> = (0..count)
            .map_while(|i| std::net::UdpSocket::bind(("127.0.0.1", first + i * step)).ok())
            .collect();
        if held.len() == usize::from(count) {
            return first;
        }
    }
    panic!("no {count} free UDP ports {step} apart on loopback between 20000 and 30000");
}

// ------------------------------------------------------------------ in-process server

/// `Server::bind` + `run` on a fresh data folder, in the test's runtime.
/// Dropping it asks the server to stop; [`InProcessServer::stop`] also waits.
pub struct InProcessServer {
    pub addr: SocketAddr,
    pub token: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    // Last, so the folder is removed after everything that uses it.
    data: Option<TempDir>,
}

impl InProcessServer {
    pub async fn start() -> Self {
        let data = tempfile::tempdir().expect("a temporary data folder");
        let mut options = ServeOptions::new(data.path().to_path_buf());
        options.admin = loopback_any_port();
        let server = Server::bind(options)
            .await
            .expect("the server binds a fresh data folder");
        let addr = server.admin_addr();
        let token = server.token().to_string();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        InProcessServer {
            addr,
            token,
            stop: Some(stop),
            task: Some(task),
            data: Some(data),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn data(&self) -> &Path {
        self.data
            .as_ref()
            .expect("the folder lives as long as the server")
            .path()
    }

    /// The crate's own API client, with the right token.
    pub fn client(&self) -> Client {
        Client::remote(&self.url(), self.token.clone()).expect("a loopback URL is valid")
    }

    /// Stops the server; returns how its run ended, and its data folder
    /// (removed when the returned `TempDir` is dropped).
    pub async fn stop(mut self) -> (anyhow::Result<()>, TempDir) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("stop runs once");
        let result = tokio::time::timeout(PROCESS_DEADLINE, task)
            .await
            .expect("the server stops within the deadline")
            .expect("the server task did not panic");
        let data = self.data.take().expect("stop runs once");
        (result, data)
    }
}

impl Drop for InProcessServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

// ------------------------------------------------------------------ spawned server

/// A `dialin serve --admin 127.0.0.1:0 --data DIR` process; killed on drop.
pub struct ServeProcess {
    child: Child,
    pub url: String,
    pub token: String,
}

impl ServeProcess {
    /// Spawns the server and waits (bounded) until it publishes
    /// `server.json` with its own pid.
    pub fn start(data: &Path, extra_args: &[&str]) -> Self {
        let mut child = dialin_command()
            .args(["serve", "--admin", "127.0.0.1:0"])
            .args(["--sip", "127.0.0.1:0", "--rtp-ports", "0-0", "--data"])
            .arg(data)
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the dialin binary starts");
        let started = Instant::now();
        for _ in 0..MAX_POLLS {
            let dir = DataDir::existing(data);
            if let Some(info) = dir.read_server_info()
                && info.pid == child.id()
            {
                let token = dir
                    .read_token()
                    .expect("the token file is readable")
                    .expect("a server writes its token before server.json");
                return ServeProcess {
                    child,
                    url: info.admin_url,
                    token,
                };
            }
            if let Some(status) = child.try_wait().expect("the child can be polled") {
                panic!(
                    "dialin serve exited ({status}) before publishing server.json: {}",
                    read_stderr(&mut child)
                );
            }
            if started.elapsed() > PROCESS_DEADLINE {
                break;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "dialin serve did not publish {}/server.json in time",
            data.display()
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "SIGTERM was delivered");
        let started = Instant::now();
        for _ in 0..MAX_POLLS {
            if let Some(status) = self.child.try_wait().expect("the child can be polled") {
                return status;
            }
            if started.elapsed() > PROCESS_DEADLINE {
                break;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        panic!("dialin serve did not stop on SIGTERM in time");
    }

    pub fn client(&self) -> Client {
        Client::remote(&self.url, self.token.clone()).expect("server.json holds a valid URL")
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_stderr(child: &mut Child) -> String {
    use std::io::Read;
    let mut text = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut text);
    }
    text
}

// ------------------------------------------------------------------ the CLI

/// The `dialin` binary with none of its environment variables set, so the
/// developer's shell can't change what a test runs.
pub fn dialin_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dialin"));
    for var in ["DIALIN_DATA", "DIALIN_SERVER", "DIALIN_TOKEN", "DIALIN_LOG"] {
        command.env_remove(var);
    }
    command
}

/// Runs a command to completion, failing the test if it outlives the deadline.
pub fn run_bounded(mut command: Command) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the dialin binary starts");
    let started = Instant::now();
    for _ in 0..MAX_POLLS {
        if child.try_wait().expect("the child can be polled").is_some() {
            return child.wait_with_output().expect("the output is readable");
        }
        if started.elapsed() > PROCESS_DEADLINE {
            break;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    let _ = child.kill();
    let output = child.wait_with_output().expect("the output is readable");
    panic!(
        "{command:?} did not finish in time; stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `dialin admin --data DATA ARGS...`
pub fn admin(data: &Path, args: &[&str]) -> Output {
    let mut command = dialin_command();
    command.arg("admin").arg("--data").arg(data).args(args);
    run_bounded(command)
}

/// `dialin admin --data DATA ARGS... --json`, which must succeed; its JSON.
pub fn admin_json(data: &Path, args: &[&str]) -> Value {
    let output = admin(data, &[args, &["--json"]].concat());
    json_stdout(args, &output)
}

/// The JSON a successful command printed.
pub fn json_stdout(args: &[&str], output: &Output) -> Value {
    assert!(
        output.status.success(),
        "dialin admin {args:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "dialin admin {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

// ------------------------------------------------------------------ raw HTTP

/// An HTTP answer read off the wire.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "the {} answer's body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Sends one HTTP/1.1 request (`Connection: close`) with exactly the given
/// extra header lines, and reads the whole answer.
pub async fn raw_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[&[u8]],
    body: &[u8],
) -> RawResponse {
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    )
    .into_bytes();
    for line in headers {
        request.extend_from_slice(line);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(body);

    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(&request).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        std::io::Result::Ok(answer)
    };
    let answer = tokio::time::timeout(HTTP_DEADLINE, exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no answer in time"))
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    parse_response(&answer).unwrap_or_else(|| {
        panic!(
            "{method} {path}: not an HTTP/1.1 answer: {}",
            String::from_utf8_lossy(&answer)
        )
    })
}

fn parse_response(answer: &[u8]) -> Option<RawResponse> {
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&answer[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let mut status_line = lines.next()?.splitn(3, ' ');
    if status_line.next()? != "HTTP/1.1" {
        return None;
    }
    let status = status_line.next()?.parse().ok()?;
    let headers = lines
        .map(|l| {
            let (name, value) = l.split_once(':')?;
            Some((name.trim().to_string(), value.trim().to_string()))
        })
        .collect::<Option<Vec<_>>>()?;
    let response = RawResponse {
        status,
        headers,
        body: answer[split + 4..].to_vec(),
    };
    // Every answer of this API is sized; a chunked one would need decoding.
    if response
        .header("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        return None;
    }
    Some(response)
}
