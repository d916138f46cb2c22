//! Directory benchmarks, with `std::time::Instant` and plain threads:
//!
//! 1. lookups per second on two reader threads against a directory of
//!    1,000,000 entries (valid, revoked and unknown IDs), no writer;
//! 2. the same while a third thread applies resets to the directory
//!    (`Change::Revoke` + `Change::Activate`) as fast as it can;
//! 3. the same while a third thread resets IDs through the real admin
//!    [`Service`] (SQLite commit, then the directory), against its own
//!    baseline (3a: the service's directory, no writer);
//! 4. resets per second through the service on one thread, no readers, with
//!    p50 / p99 / max latency per reset.
//!
//! Measurements without and with a writer alternate for a few rounds and the
//! medians are compared: ratios from one run hold up on a shared, noisy
//! machine where absolute figures do not.
//!
//! `cargo bench --bench directory [-- SECONDS]` or `DIALIN_BENCH_SECS=N`:
//! how long each timed measurement runs (default 1 s; the whole run takes
//! about 15 times that plus a few seconds of set-up).

use std::hint::black_box;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use dialin::admin::ids::{ConferenceId, EmailAddress};
use dialin::admin::model::RevocationCause;
use dialin::admin::service::EnableRequest;
use dialin::admin::{Options, Service};
use dialin::directory::{Change, Directory, Entry, Lookup, PinDigits, Revoked, Target};
use dialin::time::Timestamp;

/// Entries in the directory the readers search.
const ENTRIES: usize = 1_000_000;
/// Every fifth entry is revoked; the rest are valid.
const REVOKED_EVERY: usize = 5;
/// Lookup keys, cycled through by the readers (a power of two, for masking).
const KEYS: usize = 1 << 20;
/// Of every ten keys, this many are unknown IDs; the rest are entries.
const UNKNOWN_IN_TEN: u64 = 2;
const READERS: usize = 2;
/// Measurements without and with a writer alternate this many times.
const ROUNDS: usize = 3;
/// Users whose IDs the writer resets.
const USERS: usize = 2_000;
/// Fresh IDs the direct writer hands out before it starts over (the
/// directory stops growing there, so no resize lands inside a measurement).
const FRESH_IDS: usize = 1_000_000;
/// Digits of the synthetic IDs: 9, so they never collide with the 7-digit
/// IDs the service issues.
const SYNTHETIC_LEN: usize = 9;
/// Readers look at the stop flag once per this many lookups.
const BATCH: usize = 1024;

const TARGET_LOOKUPS_WITH_RESETS: f64 = 10_000_000.0;
const TARGET_RESET_P99: Duration = Duration::from_millis(1);

fn main() {
    let phase = phase_length();
    let begun = Instant::now();
    println!("load average at start: {}", load_average());
    println!(
        "dialin directory benchmarks: {ENTRIES} entries, {READERS} reader threads, {ROUNDS} rounds \
         of {}s per measurement, {} CPUs",
        phase.as_secs_f64(),
        thread::available_parallelism().map_or(0, |n| n.get())
    );

    // (1) and (2): a standalone directory.
    let directory = Directory::with_capacity(ENTRIES + FRESH_IDS + USERS);
    let started = Instant::now();
    populate(&directory);
    let keys = lookup_keys();
    println!(
        "setup: {} entries and {KEYS} lookup keys in {:.2?}",
        directory.len(),
        started.elapsed()
    );
    read_while(&directory, &keys, phase / 2, |_| 0);

    let mut writer = DirectWriter::new();
    let (alone, with_direct) = compare(|writing| {
        if writing {
            read_while(&directory, &keys, phase, |stop| {
                writer.run(&directory, stop)
            })
        } else {
            read_while(&directory, &keys, phase, |_| 0)
        }
    });
    report("1. lookups, no writer", &alone, None);
    report(
        "2. lookups, a thread resetting IDs in the directory",
        &with_direct,
        Some("direct resets"),
    );
    drop(directory);

    // (3) and (4): the real admin service, its directory grown to the same size.
    let tmp = tempfile::tempdir().expect("a temporary folder");
    let service = Service::open(
        &tmp.path().join("dialin.sqlite"),
        tmp.path().join("outbox"),
        Options::default(),
    )
    .expect("opening a fresh store");
    let started = Instant::now();
    let emails = enable_users(&service);
    let enabled = started.elapsed();
    // The synthetic entries go straight into the live directory (the store
    // does not know them): the readers search a map of the same size as in
    // (1) and (2), and the service's commits are what the benchmark is about.
    populate(service.directory());
    println!(
        "setup: {USERS} users enabled through the service in {enabled:.2?}; its directory has {} entries",
        service.directory().len()
    );
    read_while(service.directory(), &keys, phase / 2, |_| 0);

    let (service_alone, with_service) = compare(|writing| {
        if writing {
            read_while(service.directory(), &keys, phase, |stop| {
                reset_through_service(&service, &emails, stop)
            })
        } else {
            read_while(service.directory(), &keys, phase, |_| 0)
        }
    });
    report(
        "3a. lookups in the service's directory, no writer",
        &service_alone,
        None,
    );
    report(
        "3. lookups in the service's directory, a thread resetting IDs through the admin service",
        &with_service,
        Some("service resets"),
    );

    let latencies = resets_for(&service, &emails, phase * ROUNDS as u32);
    report_resets(&latencies);

    println!();
    println!(
        "ratios (same run; medians of {ROUNDS} interleaved rounds, each round's ratio in brackets):"
    );
    print_ratio(
        "lookups/s with direct resets  ÷ without (2 ÷ 1) ",
        &alone,
        &with_direct,
    );
    print_ratio(
        "lookups/s with service resets ÷ without (3 ÷ 3a)",
        &service_alone,
        &with_service,
    );

    println!();
    println!(
        "load average at end: {} (whole run {:.1?})",
        load_average(),
        begun.elapsed()
    );

    println!();
    println!("targets:");
    let worst = with_direct
        .lookups_per_sec
        .min(with_service.lookups_per_sec);
    println!(
        "  >= {:.0}M lookups/s across {READERS} threads while resets run: {} (lowest median {:.1}M/s)",
        TARGET_LOOKUPS_WITH_RESETS / 1e6,
        met(worst >= TARGET_LOOKUPS_WITH_RESETS),
        worst / 1e6
    );
    let p99 = percentile(&latencies, 0.99);
    println!(
        "  reset through the admin service < {TARGET_RESET_P99:?} at p99: {} (p99 {p99:.3?})",
        met(p99 < TARGET_RESET_P99)
    );
}

/// Measures without and with the writer, alternating for `ROUNDS` rounds so
/// that drift on a shared machine hits both alike; returns the medians.
fn compare(mut measure: impl FnMut(bool) -> Reading) -> (Reading, Reading) {
    let mut without = Vec::with_capacity(ROUNDS);
    let mut with = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        without.push(measure(false));
        with.push(measure(true));
    }
    let ratios: Vec<f64> = without
        .iter()
        .zip(&with)
        .map(|(a, b)| b.lookups_per_sec / a.lookups_per_sec)
        .collect();
    let (mut a, mut b) = (median(without), median(with));
    a.round_ratios = ratios.clone();
    b.round_ratios = ratios;
    (a, b)
}

fn median(mut readings: Vec<Reading>) -> Reading {
    readings.sort_by(|a, b| a.lookups_per_sec.total_cmp(&b.lookups_per_sec));
    let mut all: Vec<f64> = readings.iter().map(|r| r.lookups_per_sec).collect();
    let mid = readings.len() / 2;
    let mut m = readings.swap_remove(mid);
    all.sort_by(f64::total_cmp);
    m.rounds = all;
    m
}

fn print_ratio(name: &str, without: &Reading, with: &Reading) {
    let rounds: Vec<String> = with
        .round_ratios
        .iter()
        .map(|r| format!("{r:.3}"))
        .collect();
    println!(
        "  {name}: {:.3} [{}]",
        with.lookups_per_sec / without.lookups_per_sec,
        rounds.join(", ")
    );
}

/// The phase length: the first numeric argument (cargo bench adds `--bench`),
/// else `DIALIN_BENCH_SECS`, else 1 s.
fn phase_length() -> Duration {
    let secs = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<f64>().ok())
        .or_else(|| std::env::var("DIALIN_BENCH_SECS").ok()?.parse().ok())
        .unwrap_or(1.0);
    assert!(
        secs > 0.0 && secs <= 60.0,
        "a phase of {secs}s is out of range: give 0 to 60 seconds"
    );
    Duration::from_secs_f64(secs)
}

/// The machine's 1, 5 and 15 minute load averages: how busy others kept it.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

// ------------------------------------------------------------------ the synthetic directory

/// The `i`th synthetic ID: entries take every fourth value, unknown keys the
/// next, fresh IDs for direct resets the one after.
fn synthetic_id(i: usize, lane: u64) -> ConferenceId {
    ConferenceId::from_parts(i as u64 * 4 + lane, SYNTHETIC_LEN).expect("fits in 9 digits")
}

fn target(organizer: i64) -> Target {
    Target {
        tenant: 1,
        organizer,
        meeting: None,
        leader_pin: PinDigits::new("48213"),
    }
}

fn revoked(organizer: i64, operation: i64) -> Revoked {
    Revoked {
        at: Timestamp::from_millis(1_800_000_000_000 + operation),
        operation,
        cause: RevocationCause::ResetId,
        organizer,
    }
}

fn populate(directory: &Directory) {
    for i in 0..ENTRIES {
        let organizer = i as i64;
        let entry = if i % REVOKED_EVERY == 0 {
            Entry::Revoked(revoked(organizer, organizer))
        } else {
            Entry::Active(target(organizer))
        };
        directory.load(synthetic_id(i, 0), entry);
    }
}

/// Random keys: entries (valid or revoked) and IDs never issued.
fn lookup_keys() -> Vec<ConferenceId> {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    (0..KEYS)
        .map(|_| {
            let i = rng.below(ENTRIES as u64) as usize;
            let lane = if rng.below(10) < UNKNOWN_IN_TEN { 1 } else { 0 };
            synthetic_id(i, lane)
        })
        .collect()
}

// ------------------------------------------------------------------ readers

struct Reading {
    lookups_per_sec: f64,
    /// Share of lookups that found a valid, revoked, unknown ID.
    mix: [f64; 3],
    writes: u64,
    write_secs: f64,
    /// Every round's lookups/s, sorted (this reading is their median).
    rounds: Vec<f64>,
    /// with ÷ without, per round.
    round_ratios: Vec<f64>,
}

#[derive(Default)]
struct Counts {
    lookups: u64,
    found: [u64; 3],
    secs: f64,
}

/// Runs the readers for `phase` while `writer` runs on a thread of its own
/// until the stop flag is set (returning how many writes it made).
fn read_while<W>(
    directory: &Directory,
    keys: &[ConferenceId],
    phase: Duration,
    writer: W,
) -> Reading
where
    W: FnOnce(&AtomicBool) -> u64 + Send,
{
    let stop = AtomicBool::new(false);
    let start = Barrier::new(READERS + 2);
    thread::scope(|s| {
        let readers: Vec<_> = (0..READERS)
            .map(|r| {
                let (stop, start) = (&stop, &start);
                s.spawn(move || {
                    start.wait();
                    read(directory, keys, r * KEYS / READERS, stop)
                })
            })
            .collect();
        let writing = {
            let (stop, start) = (&stop, &start);
            s.spawn(move || {
                start.wait();
                let began = Instant::now();
                let writes = writer(stop);
                (writes, began.elapsed().as_secs_f64())
            })
        };
        start.wait();
        thread::sleep(phase);
        stop.store(true, Ordering::Relaxed);
        let counts: Vec<Counts> = readers
            .into_iter()
            .map(|r| r.join().expect("a reader does not panic"))
            .collect();
        let (writes, write_secs) = writing.join().expect("the writer does not panic");
        let lookups: u64 = counts.iter().map(|c| c.lookups).sum();
        let mut mix = [0.0; 3];
        for (k, share) in mix.iter_mut().enumerate() {
            *share = counts.iter().map(|c| c.found[k]).sum::<u64>() as f64 / lookups as f64;
        }
        Reading {
            lookups_per_sec: counts.iter().map(|c| c.lookups as f64 / c.secs).sum(),
            mix,
            writes,
            write_secs,
            rounds: Vec::new(),
            round_ratios: Vec::new(),
        }
    })
}

fn read(directory: &Directory, keys: &[ConferenceId], mut i: usize, stop: &AtomicBool) -> Counts {
    let mut counts = Counts::default();
    let began = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..BATCH {
            let k = match black_box(directory.lookup(keys[i & (KEYS - 1)])) {
                Lookup::Valid(_) => 0,
                Lookup::Revoked(_) => 1,
                Lookup::Unknown => 2,
            };
            counts.found[k] += 1;
            i += 1;
        }
        counts.lookups += BATCH as u64;
    }
    counts.secs = began.elapsed().as_secs_f64();
    counts
}

fn report(name: &str, r: &Reading, writes: Option<&str>) {
    println!();
    println!("{name}");
    println!(
        "  {:.2}M lookups/s across {READERS} threads ({:.2}M/s per thread); found {:.0}% valid, {:.0}% revoked, {:.0}% unknown",
        r.lookups_per_sec / 1e6,
        r.lookups_per_sec / 1e6 / READERS as f64,
        r.mix[0] * 100.0,
        r.mix[1] * 100.0,
        r.mix[2] * 100.0
    );
    let rounds: Vec<String> = r
        .rounds
        .iter()
        .map(|x| format!("{:.2}M", x / 1e6))
        .collect();
    println!("  every round, sorted: [{}]", rounds.join(", "));
    if let Some(what) = writes {
        println!(
            "  {what}: {} in {:.2}s = {:.0}/s",
            r.writes,
            r.write_secs,
            r.writes as f64 / r.write_secs
        );
    }
}

// ------------------------------------------------------------------ writers

/// Resets the users' IDs straight in the directory, as the service applies
/// a commit: revoke the old ID, then activate a fresh one. Keeps its place
/// between rounds.
struct DirectWriter {
    current: Vec<ConferenceId>,
    resets: u64,
}

impl DirectWriter {
    fn new() -> Self {
        // The users hold the valid entries 1, 2, 3, 4, 6, ... (every fifth is revoked).
        DirectWriter {
            current: (0..USERS)
                .map(|u| synthetic_id(u + 1 + u / (REVOKED_EVERY - 1), 0))
                .collect(),
            resets: 0,
        }
    }

    fn run(&mut self, directory: &Directory, stop: &AtomicBool) -> u64 {
        let before = self.resets;
        while !stop.load(Ordering::Relaxed) {
            let u = self.resets as usize % USERS;
            let organizer = u as i64;
            let new = synthetic_id(self.resets as usize % FRESH_IDS, 2);
            directory.apply(&[
                Change::Revoke(self.current[u], revoked(organizer, self.resets as i64)),
                Change::Activate(new, target(organizer)),
            ]);
            self.current[u] = new;
            self.resets += 1;
        }
        self.resets - before
    }
}

fn enable_users(service: &Service) -> Vec<EmailAddress> {
    (0..USERS)
        .map(|u| {
            let email: EmailAddress = format!("bench{u}@contoso.com")
                .parse()
                .expect("a valid address");
            service
                .enable_user(
                    "bench",
                    &EnableRequest {
                        email: Some(email.clone()),
                        no_email: true,
                        ..Default::default()
                    },
                )
                .expect("enabling a bench user");
            email
        })
        .collect()
}

fn reset_through_service(service: &Service, emails: &[EmailAddress], stop: &AtomicBool) -> u64 {
    let mut resets = 0u64;
    while !stop.load(Ordering::Relaxed) {
        service
            .reset_conference_id("bench", &emails[resets as usize % emails.len()], true)
            .expect("a reset through the service");
        resets += 1;
    }
    resets
}

/// Resets through the service on this thread for `phase`, timing each.
fn resets_for(service: &Service, emails: &[EmailAddress], phase: Duration) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(100_000);
    let began = Instant::now();
    while began.elapsed() < phase {
        let email = &emails[latencies.len() % emails.len()];
        let t = Instant::now();
        service
            .reset_conference_id("bench", email, true)
            .expect("a reset through the service");
        latencies.push(t.elapsed());
    }
    latencies.sort_unstable();
    latencies
}

fn report_resets(sorted: &[Duration]) {
    let total: Duration = sorted.iter().sum();
    println!();
    println!("4. resets through the admin service, one thread, no readers");
    println!(
        "  {} resets in {:.2}s = {:.0}/s",
        sorted.len(),
        total.as_secs_f64(),
        sorted.len() as f64 / total.as_secs_f64(),
    );
    println!(
        "  latency per reset: p50 {:.3?}, p99 {:.3?}, p99.9 {:.3?}, max {:.3?}",
        percentile(sorted, 0.50),
        percentile(sorted, 0.99),
        percentile(sorted, 0.999),
        sorted.last().copied().unwrap_or_default()
    );
    let over = sorted.len() - sorted.partition_point(|d| *d <= TARGET_RESET_P99);
    println!(
        "  over {TARGET_RESET_P99:?}: {over} ({:.2}%)",
        over as f64 * 100.0 / sorted.len().max(1) as f64
    );
}

/// The nearest-rank percentile of sorted durations.
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// xorshift64*: the same lookup keys every run.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}
