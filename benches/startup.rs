//! Start-up with 1,000,000 enabled users: how long until the bridge answers.
//!
//! The store is built once and cached beside the build (`CARGO_TARGET_TMPDIR`):
//! a fresh store from [`Service::open`] (the real schema and default tenant),
//! then 1,000,000 enabled Microsoft users, each with an active static ID and
//! a leader PIN, and every tenth with a revoked previous ID (a reset), by
//! direct SQL in one transaction. It is a store the real code opens: every
//! run checks the directory's size and one lookup of each kind.
//!
//! Measured, several runs each, median and range:
//!
//! 1. `Service::open`: open the store, rebuild the directory;
//! 2. in process: `Server::bind` (data folder lock, store, directory, the
//!    admin and SIP sockets) until the first `OPTIONS` on loopback gets its
//!    200;
//! 3. a `dialin serve` process: from spawning it until the first `OPTIONS`
//!    gets its 200 (what an operator sees).
//!
//! The runs are warm: the store file is in the page cache after the first.
//!
//! `cargo bench --bench startup [-- RUNS]` (default 5 runs per measurement).

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dialin::admin::ids::ConferenceId;
use dialin::admin::{Options, Service};
use dialin::directory::Lookup;
use dialin::media::prompts::PromptCatalog;
use dialin::net::server::{ServeOptions, Server};
use dialin::net::sip::SipOptions;
use dialin::sip::message::{Method, RequestBuilder};
use rusqlite::{Connection, params};

const USERS: usize = 1_000_000;
/// Every this many users also hold a revoked ID (their previous one).
const REVOKED_EVERY: usize = 10;
const TARGET: Duration = Duration::from_secs(2);
/// Bumped when the cached store's layout changes, so a stale cache is rebuilt.
const CACHE_VERSION: u32 = 1;
/// How long one start may take before the bench gives up on it.
const START_LIMIT: Duration = Duration::from_secs(60);

fn main() -> anyhow::Result<()> {
    let runs = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or(5)
        .clamp(1, 50);
    println!("load average at start: {}", load_average());
    let data = cached_store()?;
    let store = data.join("dialin.sqlite");
    println!(
        "store: {} ({:.0} MiB), {USERS} enabled users, {} revoked IDs",
        store.display(),
        std::fs::metadata(&store)?.len() as f64 / (1 << 20) as f64,
        USERS / REVOKED_EVERY
    );

    let mut open = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let service = Service::open(&store, data.join("outbox"), Options::default())?;
        open.push(t.elapsed());
        check(&service)?;
    }
    report("1. Service::open (store + directory rebuild)", &mut open);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut bind = Vec::new();
    for _ in 0..runs {
        bind.push(runtime.block_on(in_process(&data))?);
    }
    report(
        "2. in process: Server::bind until the first OPTIONS is answered",
        &mut bind,
    );

    let mut process = Vec::new();
    for _ in 0..runs {
        process.push(serve_process(&data)?);
    }
    report(
        "3. `dialin serve` process: spawn until the first OPTIONS is answered",
        &mut process,
    );

    println!();
    println!("load average at end: {}", load_average());
    let worst = median(&bind).max(median(&process));
    println!(
        "target: ready to answer calls in < {TARGET:?} with {USERS} users: {} (median {worst:.3?})",
        if worst < TARGET { "met" } else { "NOT met" }
    );
    Ok(())
}

/// The store with 1M users, built on the first run and kept.
fn cached_store() -> anyhow::Result<PathBuf> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dialin-startup-1m");
    let marker = dir.join("complete");
    let want = format!("{CACHE_VERSION} {USERS} {REVOKED_EVERY}");
    if std::fs::read_to_string(&marker).is_ok_and(|m| m == want) {
        return Ok(dir);
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    let started = Instant::now();
    let store = dir.join("dialin.sqlite");
    // The real schema and the default tenant.
    drop(Service::open(
        &store,
        dir.join("outbox"),
        Options::default(),
    )?);
    let mut conn = Connection::open(&store)?;
    let tx = conn.transaction()?;
    let at = 1_800_000_000_000i64;
    tx.execute(
        "INSERT INTO operations (at, actor, kind) VALUES (?1, 'bench', 'import')",
        [at],
    )?;
    let import = tx.last_insert_rowid();
    tx.execute(
        "INSERT INTO operations (at, actor, kind) VALUES (?1, 'bench', 'reset-id')",
        [at + 1],
    )?;
    let reset = tx.last_insert_rowid();
    {
        let mut user = tx.prepare(
            "INSERT INTO users (id, tenant_id, email, display_name, enabled, provider,
                 conference_id, leader_pin, created_at, updated_at)
             VALUES (?1, 1, ?2, ?3, 1, 'microsoft', ?4, ?5, ?6, ?6)",
        )?;
        let mut id = tx.prepare(
            "INSERT INTO conference_ids (id, tenant_id, user_id, issued_at, issued_by,
                 revoked_at, revoked_by, revocation_cause)
             VALUES (?1, 1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for u in 0..USERS {
            let uid = u as i64 + 1;
            let active = conference_id(u * 2);
            let pin = format!("{:05}", (u * 7) % 100_000);
            user.execute(params![
                uid,
                format!("user{u}@contoso.com"),
                format!("User {u}"),
                active,
                pin,
                at
            ])?;
            id.execute(params![
                active,
                uid,
                at,
                import,
                None::<i64>,
                None::<i64>,
                None::<String>
            ])?;
            if u % REVOKED_EVERY == 0 {
                id.execute(params![
                    conference_id(u * 2 + 1),
                    uid,
                    at,
                    import,
                    at + 1,
                    reset,
                    "reset-id"
                ])?;
            }
        }
    }
    tx.commit()?;
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); VACUUM;")?;
    drop(conn);
    std::fs::write(&marker, want)?;
    println!(
        "built the cached store in {:.1?} (kept for later runs)",
        started.elapsed()
    );
    Ok(dir)
}

/// The `n`th of 2,000,000 distinct 7-digit IDs, spread over the whole range
/// (7919 is prime to 10^7, so `n -> n * 7919 mod 10^7` is one to one).
fn conference_id(n: usize) -> String {
    format!("{:07}", (n as u64 * 7919 + 1_234_567) % 10_000_000)
}

/// The directory holds every ID, and answers each kind of lookup.
fn check(service: &Service) -> anyhow::Result<()> {
    let dir = service.directory();
    let want = USERS + USERS / REVOKED_EVERY;
    anyhow::ensure!(
        dir.len() == want,
        "the directory has {} entries, not {want}",
        dir.len()
    );
    let id = |s: String| s.parse::<ConferenceId>().map_err(anyhow::Error::msg);
    anyhow::ensure!(matches!(
        dir.lookup(id(conference_id(2 * 12_345))?),
        Lookup::Valid(_)
    ));
    anyhow::ensure!(matches!(
        dir.lookup(id(conference_id(2 * 12_340 + 1))?),
        Lookup::Revoked(_)
    ));
    anyhow::ensure!(matches!(
        dir.lookup(id(conference_id(2 * 12_341 + 1))?),
        Lookup::Unknown
    ));
    Ok(())
}

async fn in_process(data: &Path) -> anyhow::Result<Duration> {
    let prompts = Arc::new(PromptCatalog::embedded()?);
    let mut options = ServeOptions::new(data.to_path_buf());
    options.admin = SocketAddr::from(([127, 0, 0, 1], 0));
    options.sip = Some(SipOptions::new(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        prompts,
    ));
    let t = Instant::now();
    let server = Server::bind(options).await?;
    let sip = server.sip_addr().expect("the bridge was configured");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    let answered = tokio::task::spawn_blocking(move || first_options_answer(sip)).await??;
    let elapsed = answered - t;
    let _ = stop.send(());
    running.await??;
    Ok(elapsed)
}

fn serve_process(data: &Path) -> anyhow::Result<Duration> {
    let sip = free_udp_port()?;
    let t = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_dialin"))
        .args(["serve", "--data"])
        .arg(data)
        .args(["--admin", "127.0.0.1:0", "--sip", &sip.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let answered = first_options_answer(sip);
    // Stopped either way; when no answer came, what the server said is
    // the explanation.
    match (answered, stop(child)) {
        (Ok(at), Ok(())) => Ok(at - t),
        (Err(e), Err(said)) => Err(e.context(format!("{said:#}"))),
        (Err(e), Ok(())) | (Ok(_), Err(e)) => Err(e),
    }
}

fn stop(child: Child) -> anyhow::Result<()> {
    // SIGTERM: the server releases the data folder cleanly.
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    let output = child.wait_with_output()?;
    anyhow::ensure!(
        output.status.success(),
        "dialin serve exited with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

fn free_udp_port() -> anyhow::Result<SocketAddr> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?)
}

/// Sends OPTIONS every 2 ms until a 200 comes back; returns when it did.
fn first_options_answer(to: SocketAddr) -> anyhow::Result<Instant> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.set_read_timeout(Some(Duration::from_millis(2)))?;
    let me = socket.local_addr()?;
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    let mut n = 0u32;
    while started.elapsed() < START_LIMIT {
        n += 1;
        let branch = format!("start{n}");
        let options = RequestBuilder::new(Method::Options, &format!("sip:ping@{to}"))
            .via("UDP", &me.to_string(), &branch)
            .from(&format!("sip:bench@{me}"), "bench")
            .to(&format!("sip:ping@{to}"), None)
            .call_id(&format!("startup-{n}@bench"))
            .cseq(n)
            .to_bytes();
        // The port is not open yet: the send may be refused.
        let _ = socket.send_to(&options, to);
        match socket.recv_from(&mut buf) {
            Ok((len, _)) if buf[..len].starts_with(b"SIP/2.0 200") => return Ok(Instant::now()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            // A refusal (ICMP port unreachable) comes back at once: wait
            // as long as a timeout would, not spin.
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
    anyhow::bail!("no answer to OPTIONS from {to} within {START_LIMIT:?}")
}

fn median(sorted: &[Duration]) -> Duration {
    sorted[sorted.len() / 2]
}

fn report(name: &str, times: &mut [Duration]) {
    times.sort_unstable();
    println!();
    println!("{name}");
    println!(
        "  median {:.3?} (min {:.3?}, max {:.3?}, {} runs)",
        median(times),
        times[0],
        times[times.len() - 1],
        times.len()
    );
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}
