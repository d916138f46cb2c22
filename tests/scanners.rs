//! Known SIP scanners against the bridge: SIPVicious (Debian `sipvicious`:
//! `svmap`, `svwar`, `svcrack`) probes an in-process bridge on loopback the
//! way an attacker on the internet would, all three at once. The bridge must
//! answer sensibly (the only extension that exists is the tenant's dial-in
//! number; there is nothing to register, so nothing to crack), stay up, and
//! still complete a normal call afterwards.
//!
//! `.ci/run` installs `sipvicious`; without it these tests fail saying so.

mod common;

use std::process::Command;

use common::bridge::{Bridge, DEADLINE, NUMBER, assert_joined, call, call_config};
use dialin::media::dtmf::DtmfMethod;

/// The tenant's number as svwar writes extensions (no `+`).
const EXTENSION: &str = "14255550100";
/// svwar tries this many extensions around it; svcrack this many passwords.
const EXTENSIONS: (u64, u64) = (14_255_550_000, 14_255_550_199);
const PASSWORDS: (u32, u32) = (1000, 1099);

/// A UDP port free right now (the scanner binds it a moment later).
fn free_udp_port() -> String {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("an ephemeral port")
        .port()
        .to_string()
}

/// Runs a scanner to the end (bounded) and returns what it printed.
async fn scan(tool: &'static str, args: Vec<String>) -> String {
    let mut command = Command::new("timeout");
    // The scanners have no overall time limit of their own.
    command.arg("60").arg(tool).args(&args);
    let work = tokio::task::spawn_blocking(move || command.output());
    let output = tokio::time::timeout(DEADLINE * 2, work)
        .await
        .unwrap_or_else(|_| panic!("{tool} finished in time"))
        .expect("the scanner task ran")
        .unwrap_or_else(|e| panic!("{tool} runs (Debian package sipvicious): {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{tool} {args:?} exited with {}:\n{text}",
        output.status
    );
    text
}

fn common_args(bridge: &Bridge) -> Vec<String> {
    vec![
        "-p".into(),
        bridge.sip.port().to_string(),
        "-P".into(),
        free_udp_port(),
        "-b".into(),
        "127.0.0.1".into(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipvicious_scanners_find_only_the_service_number_and_a_call_still_joins() {
    let bridge = Bridge::start().await;
    let id = bridge.enable("alice@contoso.com", None).await;
    let host = "127.0.0.1".to_string();

    let mut svmap = common_args(&bridge);
    svmap.extend(["-m".into(), "INVITE".into(), host.clone()]);
    let mut svwar = common_args(&bridge);
    svwar.extend([
        "-m".into(),
        "INVITE".into(),
        "-e".into(),
        format!("{}-{}", EXTENSIONS.0, EXTENSIONS.1),
        host.clone(),
    ]);
    let mut svcrack = common_args(&bridge);
    svcrack.extend([
        "-u".into(),
        EXTENSION.into(),
        "-r".into(),
        format!("{}-{}", PASSWORDS.0, PASSWORDS.1),
        host.clone(),
    ]);
    let (map, war, crack) = tokio::join!(
        scan("svmap", svmap),
        scan("svwar", svwar),
        scan("svcrack", svcrack)
    );

    // svmap sees a SIP device at the bridge's address.
    assert!(
        map.contains(&bridge.sip.to_string()),
        "svmap lists the bridge:\n{map}"
    );
    // svwar: every INVITE got an answer; only the dial-in number exists
    // (the others got 404).
    let found: Vec<&str> = war
        .lines()
        .filter_map(|l| l.split('|').nth(1).map(str::trim))
        .filter(|cell| cell.len() == EXTENSION.len() && cell.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    assert_eq!(found, vec![EXTENSION], "svwar found:\n{war}");
    // svcrack: there is no registrar (REGISTER gets 405), so no password.
    assert!(
        war.contains(EXTENSION) && crack.contains("found nothing"),
        "svcrack cracked nothing:\n{crack}"
    );

    // The bridge is still up and a caller still joins.
    let report = call(call_config(
        &bridge,
        NUMBER,
        &format!("{id}#"),
        DtmfMethod::Rfc4733,
    ))
    .await;
    assert_joined(&report);
    bridge.stop().await;
}
