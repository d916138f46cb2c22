//! Emails to users: what each one says (built with lettre), and the outbox
//! that delivers them.
//!
//! An email is stored as a queued row in the same transaction as the admin
//! operation that caused it, then delivered after the commit: written as an
//! `.eml` file to `<data>/outbox/` (named by its ID, so a retry after a crash
//! rewrites the same file instead of adding a second one), and sent to an
//! SMTP relay when one is configured. A failed delivery leaves the email
//! queued for the next pass; nothing is lost.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::message::{Mailbox, header::ContentType};
use lettre::{Address, Message, SmtpTransport, Transport};

use super::ids::{ConferenceId, EmailAddress};
use super::model::{EmailKind, Meeting, Tenant};
use super::store::QueuedEmail;
use crate::time::Timestamp;

/// An email ready to be stored: subject, plain text, and the whole RFC 5322 message.
#[derive(Debug, Clone)]
pub struct Composed {
    pub kind: EmailKind,
    pub subject: String,
    pub body: String,
    pub message: Vec<u8>,
}

/// Who an email goes to.
pub struct Recipient<'a> {
    pub email: &'a EmailAddress,
    pub name: &'a str,
}

fn numbers_block(tenant: &Tenant, out: &mut String) {
    out.push_str("Dial-in numbers:\n");
    for n in tenant.default_numbers() {
        let _ = writeln!(out, "  {} ({})", n.number, n.kind);
    }
    if tenant.dial_in_numbers.is_empty() {
        out.push_str("  (none set up yet: ask your administrator)\n");
    }
}

fn compose(
    tenant: &Tenant,
    to: &Recipient,
    kind: EmailKind,
    subject: String,
    body: String,
    now: Timestamp,
) -> Composed {
    let from = Mailbox::new(
        Some("Dial-in Conferencing".into()),
        format!("noreply@{}", tenant.domain)
            .parse()
            .unwrap_or_else(|_| Address::new("noreply", "dialin.invalid").expect("valid literal")),
    );
    let to_box = Mailbox::new(
        Some(to.name.to_string()),
        to.email
            .as_str()
            .parse()
            .expect("EmailAddress was validated by lettre's parser"),
    );
    let message = Message::builder()
        .from(from)
        .to(to_box)
        .subject(subject.clone())
        .date(now.into())
        .header(ContentType::TEXT_PLAIN)
        .body(body.clone())
        .map(|m| m.formatted())
        .unwrap_or_else(|e| {
            format!("Subject: {subject}\n\n{body}\n\n(build error: {e})").into_bytes()
        });
    Composed {
        kind,
        subject,
        body,
        message,
    }
}

/// The conference info email: ID and dial-in numbers, never the PIN.
pub fn conference_info(
    tenant: &Tenant,
    to: &Recipient,
    id: Option<ConferenceId>,
    now: Timestamp,
) -> Composed {
    let mut body = format!("Hello {},\n\n", to.name);
    body.push_str("Here is your dial-in conferencing information.\n\n");
    match id {
        Some(id) => {
            let _ = writeln!(body, "Conference ID: {id}\n");
        }
        None => body.push_str(
            "Conference ID: each meeting you schedule gets its own conference ID, printed in its invitation.\n\n",
        ),
    }
    numbers_block(tenant, &mut body);
    body.push_str(
        "\nCallers dial one of the numbers above and enter the conference ID followed by #.\n\
         Your leader PIN is not sent by email.\n",
    );
    compose(
        tenant,
        to,
        EmailKind::ConferenceInfo,
        "Your dial-in conferencing information".into(),
        body,
        now,
    )
}

/// The email after an ID reset (or an admin-set ID): the new ID, the
/// numbers, and how existing meetings get updated.
pub fn id_reset(
    tenant: &Tenant,
    to: &Recipient,
    old: Option<ConferenceId>,
    new: ConferenceId,
    migration_after: Option<Timestamp>,
    now: Timestamp,
) -> Composed {
    let mut body = format!("Hello {},\n\n", to.name);
    match old {
        Some(old) => {
            let _ = writeln!(
                body,
                "Your dial-in conference ID has been reset. The old ID ({old}) no longer works for callers.\n"
            );
        }
        None => body.push_str("You have a new dial-in conference ID.\n\n"),
    }
    let _ = writeln!(body, "New conference ID: {new}\n");
    numbers_block(tenant, &mut body);
    body.push_str(
        "\nUpdate your existing meetings: invitations you sent before this change still carry the \
         old conference ID, and callers who enter it will be told it is not valid.\n",
    );
    match migration_after {
        Some(at) => {
            let _ = writeln!(
                body,
                "Your future meetings will be updated by the meeting migration service after {at}; \
                 you will get an updated invitation for each one."
            );
        }
        None => body.push_str(
            "Run the Meeting Update Tool (dialin admin migration start) or reschedule your meetings \
             so that their invitations carry the new conference ID.\n",
        ),
    }
    compose(
        tenant,
        to,
        EmailKind::IdReset,
        "Your dial-in conference ID has been reset".into(),
        body,
        now,
    )
}

/// The PIN-changed notice. It does not contain the PIN.
pub fn pin_reset(tenant: &Tenant, to: &Recipient, now: Timestamp) -> Composed {
    let body = format!(
        "Hello {},\n\nYour dial-in conferencing leader PIN has been reset by your administrator. \
         The new PIN is not sent by email: your administrator gives it to you.\n\n\
         If you did not expect this change, contact your administrator.\n",
        to.name
    );
    compose(
        tenant,
        to,
        EmailKind::PinReset,
        "Your leader PIN has been reset".into(),
        body,
        now,
    )
}

/// An updated invitation after a meeting migration.
pub fn meeting_update(
    tenant: &Tenant,
    to: &Recipient,
    meeting: &Meeting,
    now: Timestamp,
) -> Composed {
    let mut body = format!(
        "Hello {},\n\nThe dial-in information of your meeting \"{}\" on {} has been updated.\n\n\
         Conference ID: {}\n\n",
        to.name, meeting.subject, meeting.start, meeting.conference_id
    );
    numbers_block(tenant, &mut body);
    body.push_str("\nSend this updated invitation to your attendees.\n");
    compose(
        tenant,
        to,
        EmailKind::MeetingUpdate,
        format!("Updated invitation: {}", meeting.subject),
        body,
        now,
    )
}

/// An SMTP relay, from `smtp://HOST[:PORT]` (plain SMTP, for a local relay).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpRelay {
    pub host: String,
    pub port: u16,
}

impl std::str::FromStr for SmtpRelay {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "'{url}' is not an SMTP relay URL: write smtp://HOST[:PORT], e.g. smtp://127.0.0.1:25"
            )
        };
        let rest = url.strip_prefix("smtp://").ok_or_else(bad)?;
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| bad())?),
            None => (rest, 25),
        };
        if host.is_empty() || host.contains('/') {
            return Err(bad());
        }
        Ok(SmtpRelay {
            host: host.to_string(),
            port,
        })
    }
}

/// Where emails go: the `.eml` folder, and optionally an SMTP relay.
#[derive(Debug, Clone)]
pub struct Outbox {
    dir: PathBuf,
    smtp: Option<SmtpRelay>,
}

impl Outbox {
    pub fn new(dir: PathBuf, smtp: Option<SmtpRelay>) -> Self {
        Outbox { dir, smtp }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn has_smtp(&self) -> bool {
        self.smtp.is_some()
    }

    /// Writes the `.eml` file (atomically: a reader never sees half a
    /// message) and returns its name.
    pub fn write_file(&self, email: &QueuedEmail) -> std::io::Result<String> {
        let name = format!("{:06}-{}.eml", email.id, email.kind.as_str());
        let tmp = self.dir.join(format!(".{name}.tmp"));
        std::fs::create_dir_all(&self.dir)?;
        let written = std::fs::write(&tmp, &email.message)
            .and_then(|()| std::fs::rename(&tmp, self.dir.join(&name)));
        if let Err(e) = written {
            // A part-written file would stay behind until a retry
            // succeeds; the email itself stays queued in the store.
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(name)
    }

    /// Sends the message to the SMTP relay.
    pub fn send_smtp(&self, email: &QueuedEmail, from_domain: &str) -> Result<(), String> {
        let Some(relay) = &self.smtp else {
            return Ok(());
        };
        let from: Address = format!("noreply@{from_domain}")
            .parse()
            .map_err(|e| format!("sender address: {e}"))?;
        let to: Address = email
            .to
            .as_str()
            .parse()
            .map_err(|e| format!("recipient address: {e}"))?;
        let envelope = lettre::address::Envelope::new(Some(from), vec![to])
            .map_err(|e| format!("envelope: {e}"))?;
        let transport = SmtpTransport::builder_dangerous(&relay.host)
            .port(relay.port)
            .timeout(Some(Duration::from_secs(10)))
            .build();
        transport
            .send_raw(&envelope, &email.message)
            .map(|_| ())
            .map_err(|e| format!("SMTP relay {}:{}: {e}", relay.host, relay.port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> Tenant {
        crate::admin::service::default_tenant()
    }

    #[test]
    fn reset_email_has_new_id_numbers_and_instructions() {
        let email: EmailAddress = "alice@contoso.com".parse().unwrap();
        let to = Recipient {
            email: &email,
            name: "Alice",
        };
        let mail = id_reset(
            &tenant(),
            &to,
            Some("1111111".parse().unwrap()),
            "2222222".parse().unwrap(),
            None,
            Timestamp::from_millis(0),
        );
        assert!(mail.body.contains("New conference ID: 2222222"));
        assert!(mail.body.contains("+14255550100 (toll)"));
        assert!(mail.body.contains("Meeting Update Tool"));
        let raw = String::from_utf8(mail.message).unwrap();
        assert!(
            raw.contains("To: \"Alice\" <alice@contoso.com>")
                || raw.contains("To: Alice <alice@contoso.com>"),
            "{raw}"
        );
        assert!(raw.contains("Subject: Your dial-in conference ID has been reset"));
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::new(dir.path().to_path_buf(), None);
        let email = crate::admin::store::QueuedEmail {
            id: 7,
            to: "alice@contoso.com".parse().unwrap(),
            kind: EmailKind::IdReset,
            message: b"Subject: x\r\n\r\nbody".to_vec(),
            file: None,
        };
        // The file's name is taken by a folder with something in it: the
        // rename fails (for root too).
        let blocker = dir.path().join("000007-id-reset.eml");
        std::fs::create_dir_all(blocker.join("inside")).unwrap();
        assert!(outbox.write_file(&email).is_err());
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            vec!["000007-id-reset.eml".to_string()],
            "no .tmp left"
        );
        std::fs::remove_dir_all(&blocker).unwrap();
        assert_eq!(outbox.write_file(&email).unwrap(), "000007-id-reset.eml");
    }

    #[test]
    fn smtp_urls_parse_or_explain() {
        assert_eq!(
            "smtp://127.0.0.1:2525".parse::<SmtpRelay>(),
            Ok(SmtpRelay {
                host: "127.0.0.1".into(),
                port: 2525
            })
        );
        assert_eq!("smtp://relay".parse::<SmtpRelay>().unwrap().port, 25);
        let err = "http://x".parse::<SmtpRelay>().unwrap_err();
        assert!(err.contains("smtp://HOST"), "{err}");
    }
}
