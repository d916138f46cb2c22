//! `GET /api/metrics`: the bridge's counters in the Prometheus text
//! exposition format (version 0.0.4): `# HELP`, `# TYPE`, then samples.
//! Counters count since the bridge started. A server without the SIP
//! bridge answers `dialin_bridge_up 0` only.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use super::rtp::{ATTEMPT_RESULTS, BridgeMonitor};

/// The Content-Type of the answer.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

struct Text(String);

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                // Label values here are fixed words: nothing to escape.
                let _ = write!(self.0, "{k}=\"{v}\"");
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: u64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// The metrics of `bridge` (`None`: this server runs no bridge).
pub fn render(bridge: Option<&BridgeMonitor>) -> String {
    let mut t = Text(String::new());
    t.one(
        "dialin_bridge_up",
        "gauge",
        "Whether this server runs the SIP bridge.",
        u64::from(bridge.is_some()),
    );
    let Some(bridge) = bridge else {
        return t.0;
    };
    let stats = bridge.stats();
    t.one(
        "dialin_calls_active",
        "gauge",
        "Calls in progress.",
        bridge.active_calls() as u64,
    );
    t.one(
        "dialin_call_tasks",
        "gauge",
        "Call tasks running: calls in progress and ended calls still waiting for a response or an ACK.",
        bridge.call_tasks(),
    );
    t.one(
        "dialin_calls_lingering",
        "gauge",
        "Ended calls whose transactions still answer retransmissions (RFC 3261 Timer J), without a task.",
        bridge.lingering_calls() as u64,
    );
    t.one(
        "dialin_calls_total",
        "counter",
        "Calls started (INVITEs that got a call).",
        load(&stats.calls),
    );
    t.one(
        "dialin_calls_ended_total",
        "counter",
        "Calls that ended.",
        bridge.ended_total(),
    );
    t.one(
        "dialin_calls_joined_total",
        "counter",
        "Calls that joined a meeting.",
        bridge.joined_total(),
    );
    t.one(
        "dialin_calls_rejected_total",
        "counter",
        "Calls the attendant turned away after the last failed attempt.",
        load(&stats.rejected),
    );
    t.family(
        "dialin_failed_attempts_total",
        "counter",
        "Conference ID entries that did not join, by result.",
    );
    for (result, count) in ATTEMPT_RESULTS.iter().zip(&stats.attempts).skip(1) {
        t.sample(
            "dialin_failed_attempts_total",
            &[("result", result)],
            load(count),
        );
    }
    t.family(
        "dialin_invites_refused_total",
        "counter",
        "New INVITEs refused: 403 guessing protection, 404 not the tenant's number, 503 overload (--max-calls, --calls-per-source), no RTP port or shutdown.",
    );
    for (status, count) in [
        ("403", &stats.refused_403),
        ("404", &stats.refused_404),
        ("503", &stats.refused_503),
    ] {
        t.sample(
            "dialin_invites_refused_total",
            &[("status", status)],
            load(count),
        );
    }
    t.family(
        "dialin_limit_hits_total",
        "counter",
        "Messages, connections and INVITEs refused by a protocol limit, by limit (the dialin serve flag, or the Content-Length rule).",
    );
    for (limit, count) in super::sip::LIMIT_NAMES.iter().zip(&stats.limit_hits) {
        t.sample("dialin_limit_hits_total", &[("limit", limit)], load(count));
    }
    let guard = bridge.guard().map(|g| g.snapshot().0);
    t.one(
        "dialin_guard_enabled",
        "gauge",
        "Whether guessing protection is on.",
        u64::from(guard.is_some()),
    );
    let (blocks, blocked, totals, window_failures, alarm, tracked) = match &guard {
        Some(s) => {
            let now_blocked =
                |kind: &str| s.blocked.iter().filter(|b| b.key.kind() == kind).count();
            (
                [s.totals.source_blocks, s.totals.caller_id_blocks],
                [now_blocked("source"), now_blocked("caller-id")],
                s.totals,
                s.window_failures,
                s.alarm_since.is_some(),
                s.tracked,
            )
        }
        None => Default::default(),
    };
    t.family(
        "dialin_guard_blocks_total",
        "counter",
        "Blocks started, by key kind.",
    );
    t.sample(
        "dialin_guard_blocks_total",
        &[("kind", "source")],
        blocks[0],
    );
    t.sample(
        "dialin_guard_blocks_total",
        &[("kind", "caller-id")],
        blocks[1],
    );
    t.family(
        "dialin_guard_blocked",
        "gauge",
        "Keys blocked now, by kind.",
    );
    t.sample(
        "dialin_guard_blocked",
        &[("kind", "source")],
        blocked[0] as u64,
    );
    t.sample(
        "dialin_guard_blocked",
        &[("kind", "caller-id")],
        blocked[1] as u64,
    );
    t.one(
        "dialin_guard_failures_total",
        "counter",
        "Failed attempts counted by guessing protection (unknown, revoked, malformed).",
        totals.failures,
    );
    t.one(
        "dialin_guard_window_failures",
        "gauge",
        "Failed attempts across all sources in the sliding window.",
        window_failures,
    );
    t.one(
        "dialin_guard_alarm",
        "gauge",
        "Whether the global alarm (failures across all sources past the threshold) is on.",
        u64::from(alarm),
    );
    t.one(
        "dialin_guard_alarms_total",
        "counter",
        "Times the global alarm went on.",
        totals.alarms,
    );
    t.one(
        "dialin_guard_tracked_keys",
        "gauge",
        "Sources and caller IDs in the guard's table.",
        tracked as u64,
    );
    t.one(
        "dialin_guard_evicted_total",
        "counter",
        "Keys evicted from the full table.",
        totals.evicted,
    );
    t.one(
        "dialin_guard_untracked_total",
        "counter",
        "Failures of a new key not tracked because the table was full of blocks.",
        totals.untracked,
    );
    t.0
}
