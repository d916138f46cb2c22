//! Every admin rule of the seed, through the admin service, with a manual
//! clock and a seeded RNG: enable, reset, set, PINs, info emails, disable,
//! meetings and their migration, tenant settings, import, and the refusals.

use std::sync::Arc;
use std::time::Duration;

use dialin::admin::ids::{ConferenceId, EmailAddress, PhoneNumber};
use dialin::admin::model::*;
use dialin::admin::service::{EnableRequest, TenantPatch};
use dialin::admin::{AdminError, Options, Service};
use dialin::directory::Lookup;
use dialin::time::{Clock, ManualClock, Timestamp};
use tempfile::TempDir;

const T0: Timestamp = Timestamp::from_millis(1_800_000_000_000);
const ADMIN: &str = "test-admin";

struct Bridge {
    dir: TempDir,
    clock: ManualClock,
    svc: Service,
}

fn open_with_seed(seed: u64) -> Bridge {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let svc = open_in(&dir, &clock, seed);
    Bridge { dir, clock, svc }
}

fn open_in(dir: &TempDir, clock: &ManualClock, seed: u64) -> Service {
    Service::open(
        &dir.path().join("dialin.sqlite"),
        dir.path().join("outbox"),
        Options {
            clock: Arc::new(clock.clone()),
            rng_seed: Some(seed),
            smtp: None,
        },
    )
    .unwrap()
}

fn open() -> Bridge {
    open_with_seed(7)
}

fn email(s: &str) -> EmailAddress {
    s.parse().unwrap()
}

fn id(s: &str) -> ConferenceId {
    s.parse().unwrap()
}

fn enable_req(address: &str) -> EnableRequest {
    EnableRequest {
        email: Some(email(address)),
        ..Default::default()
    }
}

fn third_party(name: &str) -> Option<Provider> {
    Some(Provider::ThirdParty {
        name: name.into(),
        numbers: vec!["+18005550199".parse().unwrap()],
    })
}

impl Bridge {
    fn enable(&self, address: &str) -> dialin::admin::service::EnableOutcome {
        self.svc.enable_user(ADMIN, &enable_req(address)).unwrap()
    }

    fn current_id(&self, address: &str) -> ConferenceId {
        self.svc
            .user(&email(address))
            .unwrap()
            .conference_id
            .unwrap()
    }

    fn outbox_len(&self) -> usize {
        self.svc.emails(None).unwrap().len()
    }

    fn email_body(&self, id: EmailId) -> String {
        self.svc.email(id).unwrap().body.unwrap()
    }

    fn reset(&self, address: &str) -> dialin::admin::service::IdChange {
        self.svc
            .reset_conference_id(ADMIN, &email(address), false)
            .unwrap()
    }

    fn set_tenant(&self, patch: TenantPatch) {
        self.svc.update_tenant(ADMIN, &patch).unwrap();
    }

    fn dynamic_only(&self) {
        self.set_tenant(TenantPatch {
            conference_id_mode: Some(ConferenceIdMode::DynamicOnly),
            ..Default::default()
        });
    }
}

fn assert_valid(svc: &Service, id: ConferenceId) {
    assert!(
        matches!(svc.lookup(id), Lookup::Valid(_)),
        "{id} should be valid, got {:?}",
        svc.lookup(id)
    );
}

fn assert_revoked(svc: &Service, id: ConferenceId, cause: RevocationCause) {
    match svc.lookup(id) {
        Lookup::Revoked(r) => assert_eq!(r.cause, cause, "{id}"),
        other => panic!("{id} should be revoked ({cause:?}), got {other:?}"),
    }
}

// ------------------------------------------------------------------ the fresh folder

#[test]
fn a_fresh_store_has_one_static_tenant_with_one_toll_number() {
    let b = open();
    let t = b.svc.tenant().unwrap();
    assert_eq!(t.conference_id_mode, ConferenceIdMode::Static);
    assert!(t.send_emails_automatically);
    assert!(t.migrate_meetings_automatically);
    assert_eq!(t.leader_pin_length, 5);
    assert_eq!(t.dial_in_numbers.len(), 1);
    assert_eq!(t.dial_in_numbers[0].number.as_str(), "+14255550100");
    assert_eq!(t.dial_in_numbers[0].kind, NumberKind::Toll);
}

// ------------------------------------------------------------------ enable

#[test]
fn enable_creates_a_static_seven_digit_id_and_a_pin_and_emails_the_info() {
    let b = open();
    let out = b.enable("Alice@Contoso.com");
    assert!(out.created && out.changed);
    let user = out.user;
    assert_eq!(user.email.as_str(), "alice@contoso.com");
    assert!(user.enabled);
    assert_eq!(user.provider, Provider::Microsoft);
    let cid = user.conference_id.unwrap();
    assert_eq!(cid.len(), 7);
    assert_valid(&b.svc, cid);

    let pin = out.leader_pin.unwrap();
    assert_eq!(pin.len(), 5, "the tenant's PIN length");
    assert_eq!(
        user.leader_pin.as_deref(),
        Some("*****"),
        "listings mask the PIN"
    );
    match b.svc.lookup(cid) {
        Lookup::Valid(t) => assert!(
            t.leader_pin.matches(&pin),
            "the directory checks the new PIN"
        ),
        other => panic!("{other:?}"),
    }

    let mail = b.svc.email(out.email_id.unwrap()).unwrap();
    assert_eq!(mail.kind, EmailKind::ConferenceInfo);
    assert_eq!(mail.to.as_str(), "alice@contoso.com");
    assert_eq!(mail.status, "delivered");
    let body = mail.body.unwrap();
    assert!(
        body.contains(&cid.to_string()) && body.contains("+14255550100"),
        "{body}"
    );
    assert!(!body.contains(&pin), "the info email never carries the PIN");
    let eml =
        std::fs::read_to_string(b.dir.path().join("outbox").join(mail.file.unwrap())).unwrap();
    assert!(
        eml.contains("To: ") && eml.contains("alice@contoso.com"),
        "{eml}"
    );
}

#[test]
fn enabling_an_enabled_microsoft_user_changes_nothing() {
    let b = open();
    let first = b.enable("alice@contoso.com");
    let emails = b.outbox_len();
    let again = b.enable("alice@contoso.com");
    assert!(!again.changed && !again.created);
    assert_eq!(again.user.conference_id, first.user.conference_id);
    assert_eq!(again.leader_pin, None, "no new PIN");
    assert_eq!(b.outbox_len(), emails, "no new email");
}

#[test]
fn enable_uses_the_tenant_pin_length_and_never_a_trivial_pin() {
    let b = open();
    b.set_tenant(TenantPatch {
        leader_pin_length: Some(8),
        ..Default::default()
    });
    for n in 0..50 {
        let pin = b.enable(&format!("u{n}@contoso.com")).leader_pin.unwrap();
        assert_eq!(pin.len(), 8);
        let digits: Vec<u8> = pin.bytes().collect();
        assert!(!digits.iter().all(|d| *d == digits[0]), "{pin}");
        assert!(!digits.windows(2).all(|w| w[1] == w[0] + 1), "{pin}");
    }
}

#[test]
fn enable_with_a_chosen_static_id() {
    let b = open();
    let mut req = enable_req("alice@contoso.com");
    req.conference_id = Some(id("0012345"));
    let out = b.svc.enable_user(ADMIN, &req).unwrap();
    assert_eq!(
        out.user.conference_id,
        Some(id("0012345")),
        "leading zeros kept"
    );
    assert_valid(&b.svc, id("0012345"));

    let mut short = enable_req("bob@contoso.com");
    short.conference_id = Some(id("12345"));
    let err = b.svc.enable_user(ADMIN, &short).unwrap_err();
    assert!(err.to_string().contains("exactly 7"), "{err}");
    assert!(
        b.svc.user(&email("bob@contoso.com")).is_err(),
        "nothing half-written"
    );
}

#[test]
fn no_email_on_enable_when_asked_or_when_the_tenant_turned_emails_off() {
    let b = open();
    let mut req = enable_req("alice@contoso.com");
    req.no_email = true;
    assert_eq!(b.svc.enable_user(ADMIN, &req).unwrap().email_id, None);
    b.set_tenant(TenantPatch {
        send_emails_automatically: Some(false),
        ..Default::default()
    });
    assert_eq!(b.enable("bob@contoso.com").email_id, None);
    assert_eq!(b.outbox_len(), 0);
}

// ------------------------------------------------------------------ third-party providers

#[test]
fn a_third_party_user_needs_the_providers_id_set_by_hand() {
    let b = open();
    let mut req = enable_req("carol@contoso.com");
    req.provider = third_party("Acme ACP");
    let err = b.svc.enable_user(ADMIN, &req).unwrap_err();
    assert!(
        matches!(err, AdminError::Invalid(_)) && err.to_string().contains("--conference-id"),
        "{err}"
    );

    req.conference_id = Some(id("88001234"));
    let out = b.svc.enable_user(ADMIN, &req).unwrap();
    assert_eq!(out.user.conference_id, Some(id("88001234")));
    assert!(
        matches!(out.user.provider, Provider::ThirdParty { ref name, .. } if name == "Acme ACP")
    );

    let err = b
        .svc
        .reset_conference_id(ADMIN, &email("carol@contoso.com"), false)
        .unwrap_err();
    assert!(matches!(err, AdminError::ThirdPartyReset { .. }), "{err}");
    assert!(
        err.to_string().contains("set-id"),
        "says what to do instead: {err}"
    );
    assert_eq!(
        b.current_id("carol@contoso.com"),
        id("88001234"),
        "refusal changed nothing"
    );

    let changed = b
        .svc
        .set_conference_id(ADMIN, &email("carol@contoso.com"), id("880099"), true)
        .unwrap();
    assert_eq!(
        changed.new_conference_id,
        id("880099"),
        "third-party IDs may have other lengths"
    );
    let err = b
        .svc
        .set_conference_id(ADMIN, &email("carol@contoso.com"), id("123"), true)
        .unwrap_err();
    assert!(err.to_string().contains("4 to"), "{err}");
}

#[test]
fn a_third_party_user_moves_to_microsoft_only_with_replace_provider() {
    let b = open();
    let mut req = enable_req("carol@contoso.com");
    req.provider = third_party("Acme ACP");
    req.conference_id = Some(id("88001234"));
    b.svc.enable_user(ADMIN, &req).unwrap();

    let err = b
        .svc
        .enable_user(ADMIN, &enable_req("carol@contoso.com"))
        .unwrap_err();
    assert!(matches!(err, AdminError::ProviderConflict { .. }), "{err}");
    assert!(err.to_string().contains("--replace-provider"), "{err}");
    assert_eq!(b.current_id("carol@contoso.com"), id("88001234"));

    let mut replace = enable_req("carol@contoso.com");
    replace.replace_provider = true;
    let out = b.svc.enable_user(ADMIN, &replace).unwrap();
    assert_eq!(out.user.provider, Provider::Microsoft);
    assert_eq!(out.revoked, vec![id("88001234")]);
    assert_eq!(out.user.conference_id.unwrap().len(), 7);
    assert_revoked(&b.svc, id("88001234"), RevocationCause::ReplaceProvider);
}

// ------------------------------------------------------------------ reset

#[test]
fn reset_revokes_the_old_id_at_once_and_emails_the_new_one() {
    let b = open();
    let old = b.enable("alice@contoso.com").user.conference_id.unwrap();
    let out = b.reset("alice@contoso.com");
    let new = out.new_conference_id;
    assert_eq!(out.old_conference_id, Some(old));
    assert_ne!(new, old);
    assert_eq!(new.len(), 7);
    assert_eq!(b.current_id("alice@contoso.com"), new);
    assert_eq!(
        b.svc
            .user(&email("alice@contoso.com"))
            .unwrap()
            .previous_conference_id,
        Some(old)
    );

    // The directory already says so when the call returns.
    assert_valid(&b.svc, new);
    match b.svc.lookup(old) {
        Lookup::Revoked(r) => {
            assert_eq!(r.cause, RevocationCause::ResetId);
            assert_eq!(Some(r.operation), out.revocation_operation);
            assert_eq!(r.at, T0);
        }
        other => panic!("{other:?}"),
    }

    let body = b.email_body(out.email_id.unwrap());
    assert!(
        body.contains(&format!("New conference ID: {new}")),
        "{body}"
    );
    assert!(body.contains("+14255550100"), "{body}");
    assert!(body.contains("Update your existing meetings"), "{body}");
    assert_eq!(
        b.svc.email(out.email_id.unwrap()).unwrap().kind,
        EmailKind::IdReset
    );

    let job = out.migration_job.unwrap();
    assert_eq!(job.state, JobState::Pending);
    assert_eq!(job.next_run_at, Some(T0 + Duration::from_secs(90 * 60)));
}

#[test]
fn every_revocation_is_audited_with_operation_time_and_actor() {
    let b = open();
    let old = b.enable("alice@contoso.com").user.conference_id.unwrap();
    b.clock.advance(Duration::from_secs(60)).unwrap();
    let out = b
        .svc
        .reset_conference_id("token:ops", &email("alice@contoso.com"), true)
        .unwrap();
    let audit = b
        .svc
        .revocations(Some(&email("alice@contoso.com")))
        .unwrap();
    assert_eq!(audit.len(), 1);
    let r = &audit[0];
    assert_eq!(r.conference_id, old);
    assert_eq!(r.cause, RevocationCause::ResetId);
    assert_eq!(r.actor, "token:ops");
    assert_eq!(r.at, T0 + Duration::from_secs(60));
    assert_eq!(Some(r.operation_id), out.revocation_operation);
}

#[test]
fn reset_skips_the_email_with_no_email_or_when_the_tenant_turned_emails_off() {
    let b = open();
    b.enable("alice@contoso.com");
    let before = b.outbox_len();
    let out = b
        .svc
        .reset_conference_id(ADMIN, &email("alice@contoso.com"), true)
        .unwrap();
    assert_eq!(out.email_id, None);
    assert!(out.email_skipped.unwrap().contains("--no-email"));
    b.set_tenant(TenantPatch {
        send_emails_automatically: Some(false),
        ..Default::default()
    });
    let out = b.reset("alice@contoso.com");
    assert_eq!(out.email_id, None);
    assert!(out.email_skipped.unwrap().contains("tenant"));
    assert_eq!(b.outbox_len(), before);
}

#[test]
fn reset_is_refused_in_a_dynamic_only_tenant_with_the_seeds_explanation() {
    let b = open();
    b.enable("alice@contoso.com");
    let before = b.current_id("alice@contoso.com");
    b.dynamic_only();
    let err = b
        .svc
        .reset_conference_id(ADMIN, &email("alice@contoso.com"), false)
        .unwrap_err();
    assert!(matches!(err, AdminError::DynamicOnlyTenant));
    assert_eq!(err.status(), 409);
    let text = err.to_string();
    assert!(
        text.contains("Dynamic Only") && text.contains("--conference-id-mode static"),
        "{text}"
    );
    assert_eq!(b.current_id("alice@contoso.com"), before);
}

#[test]
fn reset_is_refused_for_unknown_and_disabled_users() {
    let b = open();
    let err = b
        .svc
        .reset_conference_id(ADMIN, &email("nobody@contoso.com"), false)
        .unwrap_err();
    assert!(
        matches!(err, AdminError::UnknownUser(_)) && err.status() == 404,
        "{err}"
    );
    b.svc
        .add_user(ADMIN, &email("dave@contoso.com"), "Dave")
        .unwrap();
    let err = b
        .svc
        .reset_conference_id(ADMIN, &email("dave@contoso.com"), false)
        .unwrap_err();
    assert!(matches!(err, AdminError::NotEnabled { .. }), "{err}");
    assert!(
        err.to_string().contains("user enable"),
        "says what to do: {err}"
    );
}

// ------------------------------------------------------------------ set-id and reuse

#[test]
fn set_id_takes_a_free_seven_digit_id_and_revokes_the_old_one() {
    let b = open();
    let old = b.enable("alice@contoso.com").user.conference_id.unwrap();
    let out = b
        .svc
        .set_conference_id(ADMIN, &email("alice@contoso.com"), id("5551234"), false)
        .unwrap();
    assert!(out.changed);
    assert_eq!(out.new_conference_id, id("5551234"));
    assert_valid(&b.svc, id("5551234"));
    assert_revoked(&b.svc, old, RevocationCause::SetId);
    assert!(b.email_body(out.email_id.unwrap()).contains("5551234"));

    let same = b
        .svc
        .set_conference_id(ADMIN, &email("alice@contoso.com"), id("5551234"), false)
        .unwrap();
    assert!(!same.changed, "setting the current ID changes nothing");
}

#[test]
fn set_id_refuses_ids_in_use_revoked_or_of_the_wrong_length() {
    let b = open();
    let alice_old = b.enable("alice@contoso.com").user.conference_id.unwrap();
    let bob = b.enable("bob@contoso.com").user.conference_id.unwrap();
    b.reset("alice@contoso.com");
    let alice_now = b.current_id("alice@contoso.com");
    let emails = b.outbox_len();

    let err = b
        .svc
        .set_conference_id(ADMIN, &email("alice@contoso.com"), bob, false)
        .unwrap_err();
    assert!(
        matches!(err, AdminError::IdInUse { .. }) && err.to_string().contains("bob@contoso.com"),
        "{err}"
    );

    for who in ["alice@contoso.com", "bob@contoso.com"] {
        let err = b
            .svc
            .set_conference_id(ADMIN, &email(who), alice_old, false)
            .unwrap_err();
        assert!(matches!(err, AdminError::IdRevoked { .. }), "{who}: {err}");
        assert!(err.to_string().contains("never issued again"), "{err}");
    }
    let err = b
        .svc
        .set_conference_id(ADMIN, &email("alice@contoso.com"), id("12345678"), false)
        .unwrap_err();
    assert!(err.to_string().contains("exactly 7"), "{err}");

    assert_eq!(b.current_id("alice@contoso.com"), alice_now);
    assert_eq!(b.current_id("bob@contoso.com"), bob);
    assert_eq!(b.outbox_len(), emails, "refusals send nothing");
    assert_eq!(
        b.svc.revocations(None).unwrap().len(),
        1,
        "refusals revoke nothing"
    );
}

#[test]
fn a_revoked_id_is_never_generated_again() {
    // Two stores with the same seed draw the same random numbers. In the
    // second one, the ID the generator would hand bob has been revoked
    // (by set-id, which draws nothing), so bob must get another one.
    let a = open_with_seed(42);
    a.enable("alice@contoso.com");
    let bob_in_a = a.enable("bob@contoso.com").user.conference_id.unwrap();

    let b = open_with_seed(42);
    b.enable("alice@contoso.com");
    b.svc
        .set_conference_id(ADMIN, &email("alice@contoso.com"), bob_in_a, true)
        .unwrap();
    b.svc
        .set_conference_id(ADMIN, &email("alice@contoso.com"), id("0000001"), true)
        .unwrap();
    assert_revoked(&b.svc, bob_in_a, RevocationCause::SetId);

    let bob_in_b = b.enable("bob@contoso.com").user.conference_id.unwrap();
    assert_ne!(bob_in_b, bob_in_a, "the revoked ID was skipped");
    assert_revoked(&b.svc, bob_in_a, RevocationCause::SetId);
}

#[test]
fn many_resets_never_issue_an_id_twice() {
    let b = open();
    for n in 0..20 {
        b.enable(&format!("u{n}@contoso.com"));
    }
    for round in 0..50 {
        for n in 0..20 {
            let out = b
                .svc
                .reset_conference_id(ADMIN, &email(&format!("u{n}@contoso.com")), true);
            assert!(out.is_ok(), "round {round} user {n}: {out:?}");
        }
    }
    let mut all: Vec<ConferenceId> = b
        .svc
        .revocations(None)
        .unwrap()
        .iter()
        .map(|r| r.conference_id)
        .collect();
    assert_eq!(all.len(), 1000);
    all.extend(
        b.svc
            .users(None)
            .unwrap()
            .iter()
            .filter_map(|u| u.conference_id),
    );
    let count = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), count, "every ID issued once");
    assert!(b.svc.verify_directory().unwrap().is_empty());
}

// ------------------------------------------------------------------ PIN and info

#[test]
fn reset_pin_shows_the_new_pin_once_and_emails_without_it() {
    let b = open();
    let first = b.enable("alice@contoso.com").leader_pin.unwrap();
    let cid = b.current_id("alice@contoso.com");
    let out = b
        .svc
        .reset_pin(ADMIN, &email("alice@contoso.com"), false)
        .unwrap();
    assert_eq!(out.leader_pin.len(), 5);
    assert_eq!(out.user.leader_pin.as_deref(), Some("*****"));
    let body = b.email_body(out.email_id.unwrap());
    assert!(body.contains("leader PIN has been reset"), "{body}");
    assert!(!body.contains(&out.leader_pin), "the PIN is not emailed");
    assert_eq!(
        b.svc.email(out.email_id.unwrap()).unwrap().kind,
        EmailKind::PinReset
    );
    match b.svc.lookup(cid) {
        Lookup::Valid(t) => {
            assert!(t.leader_pin.matches(&out.leader_pin));
            assert!(
                first == out.leader_pin || !t.leader_pin.matches(&first),
                "the old PIN stops working"
            );
        }
        other => panic!("{other:?}"),
    }
    let listed = serde_json::to_string(&b.svc.users(None).unwrap()).unwrap();
    assert!(
        !listed.contains(&out.leader_pin),
        "listings never show it: {listed}"
    );
}

#[test]
fn send_info_emails_the_id_and_numbers_but_never_the_pin() {
    let b = open();
    let pin = b.enable("alice@contoso.com").leader_pin.unwrap();
    let cid = b.current_id("alice@contoso.com");
    let out = b
        .svc
        .send_conference_info(ADMIN, &email("alice@contoso.com"))
        .unwrap();
    let body = b.email_body(out.email_id);
    assert!(
        body.contains(&cid.to_string()) && body.contains("+14255550100"),
        "{body}"
    );
    assert!(!body.contains(&pin), "{body}");

    b.svc
        .add_user(ADMIN, &email("dave@contoso.com"), "Dave")
        .unwrap();
    let err = b
        .svc
        .send_conference_info(ADMIN, &email("dave@contoso.com"))
        .unwrap_err();
    assert!(matches!(err, AdminError::NotEnabled { .. }), "{err}");
}

// ------------------------------------------------------------------ disable

#[test]
fn disable_revokes_every_id_of_the_user_and_reenable_gives_a_new_one() {
    let b = open();
    let old = b.enable("alice@contoso.com").user.conference_id.unwrap();
    let out = b
        .svc
        .disable_user(ADMIN, &email("alice@contoso.com"))
        .unwrap();
    assert!(out.changed && !out.user.enabled);
    assert_eq!(out.revoked, vec![old]);
    assert_eq!(out.user.conference_id, None);
    assert_revoked(&b.svc, old, RevocationCause::Disable);

    let again = b
        .svc
        .disable_user(ADMIN, &email("alice@contoso.com"))
        .unwrap();
    assert!(!again.changed);

    let back = b.enable("alice@contoso.com");
    assert!(back.changed);
    assert_ne!(back.user.conference_id, Some(old));
    assert_revoked(&b.svc, old, RevocationCause::Disable);
}

// ------------------------------------------------------------------ meetings and migration

#[test]
fn invitations_go_stale_on_reset_and_are_migrated_after_ninety_minutes() {
    let b = open();
    let old = b.enable("alice@contoso.com").user.conference_id.unwrap();
    let alice = email("alice@contoso.com");
    let soon = b
        .svc
        .schedule_meeting(ADMIN, &alice, "Standup", T0 + Duration::from_secs(3600))
        .unwrap();
    let later = b
        .svc
        .schedule_meeting(ADMIN, &alice, "Review", T0 + Duration::from_secs(3 * 86400))
        .unwrap();
    assert_eq!(soon.conference_id, old);
    assert_eq!(soon.invitation, InvitationState::Current);
    assert!(!soon.dynamic);

    let new = b.reset("alice@contoso.com").new_conference_id;
    let meetings = b.svc.meetings(Some(&alice)).unwrap();
    assert!(
        meetings
            .iter()
            .all(|m| m.invitation == InvitationState::Stale && m.conference_id == old)
    );

    b.clock.advance(Duration::from_secs(89 * 60)).unwrap();
    assert!(
        b.svc.run_due_migrations().unwrap().is_empty(),
        "not before 90 minutes"
    );
    b.clock.advance(Duration::from_secs(60)).unwrap();
    let runs = b.svc.run_due_migrations().unwrap();
    assert_eq!(runs.len(), 1);
    let job = &runs[0].job;
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(job.runs, 1);
    // The standup started 60 minutes in: it is past, so only the review moves.
    assert_eq!(job.meetings_updated, 1);
    let standup = b.svc.meeting(soon.id).unwrap();
    assert_eq!(
        (standup.conference_id, standup.invitation),
        (old, InvitationState::Stale)
    );
    let review = b.svc.meeting(later.id).unwrap();
    assert_eq!(
        (review.conference_id, review.invitation),
        (new, InvitationState::Migrated)
    );
    assert_eq!(runs[0].email_ids.len(), 1);
    let update = b.svc.email(runs[0].email_ids[0]).unwrap();
    assert_eq!(update.kind, EmailKind::MeetingUpdate);
    assert!(update.subject.contains("Review") && update.body.unwrap().contains(&new.to_string()));
    assert!(
        b.svc.run_due_migrations().unwrap().is_empty(),
        "a finished job does not run again"
    );
}

#[test]
fn a_second_reset_before_the_job_runs_keeps_one_pending_job() {
    let b = open();
    b.enable("alice@contoso.com");
    let first = b.reset("alice@contoso.com").migration_job.unwrap();
    b.clock.advance(Duration::from_secs(600)).unwrap();
    let second = b.reset("alice@contoso.com").migration_job.unwrap();
    assert_eq!(first.id, second.id);
    assert_eq!(b.svc.migration_jobs(None).unwrap().len(), 1);
}

#[test]
fn migration_can_be_started_by_hand_when_the_tenant_does_not_migrate_automatically() {
    let b = open();
    b.set_tenant(TenantPatch {
        migrate_meetings_automatically: Some(false),
        ..Default::default()
    });
    b.enable("alice@contoso.com");
    let out = b.reset("alice@contoso.com");
    assert!(out.migration_job.is_none());
    assert!(
        b.email_body(out.email_id.unwrap())
            .contains("Meeting Update Tool")
    );
    let job = b
        .svc
        .start_migration(ADMIN, &email("alice@contoso.com"))
        .unwrap();
    assert_eq!(
        (job.state, job.trigger.as_str()),
        (JobState::Pending, "manual")
    );
    assert_eq!(job.next_run_at, Some(T0 + Duration::from_secs(90 * 60)));
}

#[test]
fn disabling_a_user_cancels_their_waiting_migration() {
    let b = open();
    b.enable("alice@contoso.com");
    b.reset("alice@contoso.com");
    b.svc
        .disable_user(ADMIN, &email("alice@contoso.com"))
        .unwrap();
    let job = &b.svc.migration_jobs(None).unwrap()[0];
    assert_eq!(job.state, JobState::Failed);
    assert!(job.last_error.as_deref().unwrap().contains("disabled"));
    b.clock.advance(Duration::from_secs(90 * 60)).unwrap();
    assert!(b.svc.run_due_migrations().unwrap().is_empty());
}

#[test]
fn reenabling_a_user_migrates_the_invitations_that_carry_the_revoked_id() {
    let b = open();
    b.enable("alice@contoso.com");
    let alice = email("alice@contoso.com");
    let m = b
        .svc
        .schedule_meeting(ADMIN, &alice, "Review", T0 + Duration::from_secs(86400))
        .unwrap();
    b.svc.disable_user(ADMIN, &alice).unwrap();
    let new = b.enable("alice@contoso.com").user.conference_id.unwrap();
    b.clock.advance(Duration::from_secs(90 * 60)).unwrap();
    let runs = b.svc.run_due_migrations().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].job.trigger, "enable");
    let m = b.svc.meeting(m.id).unwrap();
    assert_eq!(
        (m.conference_id, m.invitation),
        (new, InvitationState::Migrated)
    );
}

#[test]
fn a_failing_migration_is_retried_nine_times_in_a_day_then_fails() {
    let b = open();
    // In a dynamic-only tenant the user has no static ID to move meetings
    // to: every run of a migration started by hand fails.
    b.dynamic_only();
    b.enable("alice@contoso.com");
    b.svc
        .start_migration(ADMIN, &email("alice@contoso.com"))
        .unwrap();
    b.clock.advance(Duration::from_secs(90 * 60)).unwrap();
    let first_run = b.clock.now();
    let mut runs = 0;
    for _ in 0..20 {
        let done = b.svc.run_due_migrations().unwrap();
        runs += done.len();
        let job = &b.svc.migration_jobs(None).unwrap()[0];
        if job.state == JobState::Failed {
            break;
        }
        assert_eq!(job.state, JobState::Pending, "retried");
        assert!(
            job.last_error
                .as_deref()
                .unwrap()
                .contains("no static conference ID")
        );
        let next = job.next_run_at.unwrap();
        b.clock.advance(next.saturating_sub(b.clock.now())).unwrap();
    }
    let job = &b.svc.migration_jobs(None).unwrap()[0];
    assert_eq!(job.state, JobState::Failed);
    assert_eq!((runs, job.runs), (10, 10), "the first run and 9 retries");
    assert_eq!(
        job.finished_at.unwrap().saturating_sub(first_run),
        Duration::from_secs(24 * 3600)
    );
}

#[test]
fn a_dynamic_only_tenant_gives_each_meeting_its_own_id() {
    let b = open();
    b.dynamic_only();
    let out = b.enable("alice@contoso.com");
    assert_eq!(out.user.conference_id, None, "no static ID");
    assert!(out.leader_pin.is_some());
    let alice = email("alice@contoso.com");
    let m1 = b
        .svc
        .schedule_meeting(ADMIN, &alice, "One", T0 + Duration::from_secs(3600))
        .unwrap();
    let m2 = b
        .svc
        .schedule_meeting(ADMIN, &alice, "Two", T0 + Duration::from_secs(7200))
        .unwrap();
    assert!(m1.dynamic && m2.dynamic);
    assert_ne!(m1.conference_id, m2.conference_id);
    match b.svc.lookup(m1.conference_id) {
        Lookup::Valid(t) => assert_eq!(t.meeting, Some(m1.id)),
        other => panic!("{other:?}"),
    }
    let err = b
        .svc
        .set_conference_id(ADMIN, &alice, id("5551234"), true)
        .unwrap_err();
    assert!(matches!(err, AdminError::DynamicOnlyTenant), "{err}");

    // Disabling the organizer revokes the meetings' IDs too.
    let off = b.svc.disable_user(ADMIN, &alice).unwrap();
    assert_eq!(off.revoked.len(), 2);
    assert_revoked(&b.svc, m1.conference_id, RevocationCause::Disable);
    assert_eq!(
        b.svc.meeting(m2.id).unwrap().invitation,
        InvitationState::Stale
    );
}

#[test]
fn switching_a_tenant_to_static_gives_enabled_users_a_static_id() {
    let b = open();
    b.dynamic_only();
    b.enable("alice@contoso.com");
    b.set_tenant(TenantPatch {
        conference_id_mode: Some(ConferenceIdMode::Static),
        ..Default::default()
    });
    let cid = b.current_id("alice@contoso.com");
    assert_valid(&b.svc, cid);
    assert!(
        b.svc
            .reset_conference_id(ADMIN, &email("alice@contoso.com"), true)
            .is_ok()
    );
}

#[test]
fn scheduling_needs_an_enabled_organizer_and_a_subject() {
    let b = open();
    let err = b
        .svc
        .schedule_meeting(ADMIN, &email("nobody@contoso.com"), "X", T0)
        .unwrap_err();
    assert!(matches!(err, AdminError::UnknownUser(_)));
    b.enable("alice@contoso.com");
    let err = b
        .svc
        .schedule_meeting(ADMIN, &email("alice@contoso.com"), "  ", T0)
        .unwrap_err();
    assert!(matches!(err, AdminError::Invalid(_)), "{err}");
}

// ------------------------------------------------------------------ tenant settings

#[test]
fn tenant_settings_are_validated() {
    let b = open();
    for bad in [3, 13] {
        let err = b
            .svc
            .update_tenant(
                ADMIN,
                &TenantPatch {
                    leader_pin_length: Some(bad),
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert!(err.to_string().contains("4 to 12"), "{err}");
    }
    assert_eq!(b.svc.tenant().unwrap().leader_pin_length, 5, "unchanged");
}

#[test]
fn dial_in_numbers_are_normalized_unique_and_never_all_removed() {
    let b = open();
    let number: PhoneNumber = "tel:+1-800-555-0111".parse().unwrap();
    let t = b
        .svc
        .add_number(ADMIN, number.clone(), NumberKind::TollFree, true)
        .unwrap();
    assert_eq!(t.dial_in_numbers.len(), 2);
    assert_eq!(t.dial_in_numbers[1].number.as_str(), "+18005550111");
    let err = b
        .svc
        .add_number(ADMIN, number.clone(), NumberKind::Toll, false)
        .unwrap_err();
    assert_eq!(err.status(), 409);

    let toll: PhoneNumber = "+14255550100".parse().unwrap();
    b.svc.remove_number(ADMIN, &toll).unwrap();
    let err = b.svc.remove_number(ADMIN, &number).unwrap_err();
    assert!(err.to_string().contains("last dial-in number"), "{err}");
    let err = b.svc.remove_number(ADMIN, &toll).unwrap_err();
    assert_eq!(err.status(), 404);
}

#[test]
fn a_users_default_number_must_be_one_of_the_tenants() {
    let b = open();
    let mut req = enable_req("alice@contoso.com");
    req.default_service_number = Some("+4420755501000".parse().unwrap());
    let err = b.svc.enable_user(ADMIN, &req).unwrap_err();
    assert!(
        err.to_string()
            .contains("not one of the tenant's dial-in numbers"),
        "{err}"
    );
    req.default_service_number = Some("+14255550100".parse().unwrap());
    let out = b.svc.enable_user(ADMIN, &req).unwrap();
    assert_eq!(
        out.user.default_service_number.unwrap().as_str(),
        "+14255550100"
    );
}

// ------------------------------------------------------------------ import

#[test]
fn import_enables_every_user_or_none() {
    let b = open();
    b.enable("taken@contoso.com");
    let taken = b.current_id("taken@contoso.com");
    let bad = format!(
        "email,display_name,conference_id\nann@contoso.com,Ann,\nben@contoso.com,Ben,{taken}\n"
    );
    let err = b.svc.import_users(ADMIN, &bad, true).unwrap_err();
    assert!(err.to_string().starts_with("line 3:"), "{err}");
    assert!(
        b.svc.user(&email("ann@contoso.com")).is_err(),
        "line 2 was rolled back"
    );

    let good = "email,display_name,provider,conference_id\n\
                ann@contoso.com,Ann,,\n\
                ben@contoso.com,Ben,Acme ACP,77001234\n\
                taken@contoso.com,,,\n";
    let report = b.svc.import_users(ADMIN, good, true).unwrap();
    assert_eq!(
        (report.created, report.enabled, report.unchanged),
        (2, 2, 1)
    );
    assert_eq!(report.users[0].conference_id.unwrap().len(), 7);
    assert!(report.users[0].leader_pin.is_some());
    assert_valid(&b.svc, id("77001234"));
    assert_eq!(b.outbox_len(), 1, "--no-email: only taken's enable email");
}

// ------------------------------------------------------------------ restart and delivery

#[test]
fn reopening_the_store_rebuilds_the_same_directory() {
    let b = open();
    b.enable("alice@contoso.com");
    b.enable("bob@contoso.com");
    b.reset("alice@contoso.com");
    b.svc
        .disable_user(ADMIN, &email("bob@contoso.com"))
        .unwrap();
    let before = b.svc.directory().snapshot();
    assert_eq!(before.len(), 3);
    let reopened = open_in(&b.dir, &b.clock, 1);
    assert_eq!(reopened.directory().snapshot(), before);
    assert!(reopened.verify_directory().unwrap().is_empty());
}

#[test]
fn an_email_that_cannot_be_written_stays_queued_and_is_delivered_later() {
    let b = open();
    let outbox = b.dir.path().join("outbox");
    std::fs::remove_dir_all(&outbox).ok();
    std::fs::write(&outbox, "a file where the outbox folder should be").unwrap();

    let out = b.enable("alice@contoso.com");
    assert!(out.changed, "the admin operation still succeeds");
    let mail = b.svc.email(out.email_id.unwrap()).unwrap();
    assert_eq!(mail.status, "queued");
    assert_eq!(mail.attempts, 1);
    assert!(mail.last_error.is_some());

    std::fs::remove_file(&outbox).unwrap();
    assert_eq!(b.svc.deliver_queued().unwrap(), 1);
    let mail = b.svc.email(out.email_id.unwrap()).unwrap();
    assert_eq!(mail.status, "delivered");
    assert!(outbox.join(mail.file.unwrap()).exists());
}

#[test]
fn a_new_default_number_replaces_the_old_default_of_its_kind() {
    let b = open();
    let second: PhoneNumber = "+14255550111".parse().unwrap();
    let t = b
        .svc
        .add_number(ADMIN, second.clone(), NumberKind::Toll, true)
        .unwrap();
    let defaults: Vec<&str> = t
        .dial_in_numbers
        .iter()
        .filter(|n| n.default)
        .map(|n| n.number.as_str())
        .collect();
    assert_eq!(defaults, vec!["+14255550111"]);
    let free: PhoneNumber = "+18005550100".parse().unwrap();
    let t = b
        .svc
        .add_number(ADMIN, free, NumberKind::TollFree, true)
        .unwrap();
    assert_eq!(t.default_numbers().len(), 2, "one default per kind");
}

#[test]
fn a_provider_conflict_names_both_providers() {
    let b = open();
    b.enable("alice@contoso.com");
    let mut req = enable_req("alice@contoso.com");
    req.provider = third_party("Acme ACP");
    req.conference_id = Some(id("88001234"));
    let err = b.svc.enable_user(ADMIN, &req).unwrap_err().to_string();
    assert!(
        err.contains("'microsoft'")
            && err.contains("Acme ACP")
            && err.contains("--replace-provider"),
        "{err}"
    );
}

#[test]
fn the_bridges_copy_of_the_dial_in_numbers_follows_every_commit() {
    let b = open();
    let listed = |svc: &Service| -> Vec<String> {
        svc.dial_in_numbers()
            .iter()
            .map(|n| n.to_string())
            .collect()
    };
    assert_eq!(listed(&b.svc), vec!["+14255550100"]);
    let added: PhoneNumber = "+18005550100".parse().unwrap();
    b.svc
        .add_number(ADMIN, added.clone(), NumberKind::TollFree, false)
        .unwrap();
    assert_eq!(listed(&b.svc), vec!["+14255550100", "+18005550100"]);
    b.svc
        .remove_number(ADMIN, &"+14255550100".parse().unwrap())
        .unwrap();
    assert_eq!(listed(&b.svc), vec!["+18005550100"]);
    // A refused change leaves the copy as it was.
    assert!(b.svc.remove_number(ADMIN, &added).is_err());
    assert_eq!(listed(&b.svc), vec!["+18005550100"]);
}
