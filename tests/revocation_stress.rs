//! Linearizable revocation under concurrency: readers look IDs up while
//! writers reset them through the admin service. Once a reset has returned,
//! no lookup that starts afterwards may find the old ID valid.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dialin::admin::ids::{ConferenceId, EmailAddress};
use dialin::admin::service::EnableRequest;
use dialin::admin::{Options, Service};
use dialin::directory::Lookup;

const USERS: usize = 16;
const WRITERS: usize = 2;
const READERS: usize = 3;
const RESETS_PER_WRITER: usize = 400;
const DEADLINE: Duration = Duration::from_secs(60);
const NONE: u64 = u64::MAX;

fn encode(id: ConferenceId) -> u64 {
    id.to_string().parse().expect("7 digits")
}

fn decode(value: u64) -> ConferenceId {
    ConferenceId::from_parts(value, 7).expect("stored from a 7-digit ID")
}

#[test]
fn no_lookup_after_a_reset_returned_finds_the_old_id_valid() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::open(
        &dir.path().join("dialin.sqlite"),
        dir.path().join("outbox"),
        Options::default(),
    )
    .unwrap();
    let emails: Vec<EmailAddress> = (0..USERS)
        .map(|n| format!("user{n}@contoso.com").parse().unwrap())
        .collect();
    let current: Vec<AtomicU64> = emails
        .iter()
        .map(|e| {
            let req = EnableRequest {
                email: Some(e.clone()),
                no_email: true,
                ..Default::default()
            };
            AtomicU64::new(encode(
                svc.enable_user("stress", &req)
                    .unwrap()
                    .user
                    .conference_id
                    .unwrap(),
            ))
        })
        .collect();
    // The last ID whose revocation has returned, per user.
    let revoked: Vec<AtomicU64> = (0..USERS).map(|_| AtomicU64::new(NONE)).collect();

    let started = Instant::now();
    let writers_done = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let stale_accepts = AtomicUsize::new(0);
    let checked = AtomicUsize::new(0);
    let resets = AtomicUsize::new(0);
    let svc = Arc::new(svc);

    std::thread::scope(|scope| {
        for w in 0..WRITERS {
            let (svc, emails, current, revoked) = (&svc, &emails, &current, &revoked);
            let (writers_done, resets, stale_accepts) = (&writers_done, &resets, &stale_accepts);
            scope.spawn(move || {
                // Each writer owns the users u where u % WRITERS == w, so a
                // user's resets are sequential and "last revoked" is exact.
                let mine: Vec<usize> = (0..USERS).filter(|u| u % WRITERS == w).collect();
                for i in 0..RESETS_PER_WRITER {
                    if started.elapsed() > DEADLINE {
                        break;
                    }
                    let u = mine[i % mine.len()];
                    let out = svc.reset_conference_id("stress", &emails[u], true).unwrap();
                    let old = out.old_conference_id.unwrap();
                    revoked[u].store(encode(old), Ordering::SeqCst);
                    current[u].store(encode(out.new_conference_id), Ordering::SeqCst);
                    resets.fetch_add(1, Ordering::Relaxed);
                    // The writer's own next lookup sees the new state.
                    if !matches!(svc.lookup(out.new_conference_id), Lookup::Valid(_))
                        || matches!(svc.lookup(old), Lookup::Valid(_))
                    {
                        stale_accepts.fetch_add(1, Ordering::SeqCst);
                    }
                }
                writers_done.fetch_add(1, Ordering::SeqCst);
            });
        }
        for r in 0..READERS {
            let (svc, current, revoked, stop) = (&svc, &current, &revoked, &stop);
            let (stale_accepts, checked, writers_done) = (&stale_accepts, &checked, &writers_done);
            scope.spawn(move || {
                let mut u = r;
                let mut rounds = 0u64;
                // Bounded by the writers finishing, the deadline, and a count.
                while writers_done.load(Ordering::SeqCst) < WRITERS
                    && !stop.load(Ordering::Relaxed)
                    && started.elapsed() < DEADLINE
                    && rounds < 200_000_000
                {
                    rounds += 1;
                    u = (u + 7) % USERS;
                    let old = revoked[u].load(Ordering::SeqCst);
                    if old != NONE {
                        // This reset returned before the lookup starts.
                        checked.fetch_add(1, Ordering::Relaxed);
                        if matches!(svc.lookup(decode(old)), Lookup::Valid(_)) {
                            stale_accepts.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    let now = current[u].load(Ordering::SeqCst);
                    if matches!(svc.lookup(decode(now)), Lookup::Unknown) {
                        // An ID handed out by a returned call is always known.
                        stale_accepts.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    stop.store(true, Ordering::Relaxed);

    let resets = resets.load(Ordering::Relaxed);
    let checked = checked.load(Ordering::Relaxed);
    assert_eq!(
        stale_accepts.load(Ordering::SeqCst),
        0,
        "stale accepts in {checked} checks"
    );
    assert_eq!(
        resets,
        WRITERS * RESETS_PER_WRITER,
        "every reset ran within the deadline"
    );
    assert!(
        checked > resets,
        "readers raced the writers ({checked} checks for {resets} resets)"
    );
    assert!(
        svc.verify_directory().unwrap().is_empty(),
        "directory equals store"
    );
}
