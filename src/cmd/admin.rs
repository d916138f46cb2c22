//! `dialin admin ...`: turns a command into an admin API request, sends it
//! to the running server or to an in-process router over the data folder,
//! and prints the answer (as text, or the JSON with `--json`).

use anyhow::{Context, bail};
use hyper::Method;
use serde_json::{Map, Value, json};

use crate::cli::*;
use crate::client::{Payload, segment};

use super::connect::{Local, connect};

/// Runs one admin command and prints its answer.
pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    let (method, path, payload) = request(&args.command)?;
    let connection = connect(
        &args.data,
        args.server.as_deref(),
        args.token.as_deref(),
        Local::Open,
    )
    .await?;
    let mut value = connection.client.call(method, &path, payload).await?;
    if let AdminCommand::Meeting(MeetingCommand::List { stale: true, .. }) = &args.command
        && let Value::Array(items) = &mut value
    {
        items.retain(|m| m["invitation"] == "stale");
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", render(&args.command, &value));
    }
    Ok(())
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", segment(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// Drops `null` fields so the server applies its defaults.
fn object(value: Value) -> Payload {
    match value {
        Value::Object(map) => Payload::Json(Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .collect::<Map<_, _>>(),
        )),
        other => Payload::Json(other),
    }
}

/// The API request a command makes.
fn request(command: &AdminCommand) -> anyhow::Result<(Method, String, Payload)> {
    use AdminCommand as A;
    let user = |email: &str, action: &str| format!("/api/users/{}{action}", segment(email));
    Ok(match command {
        A::Tenant(TenantCommand::Show) => (Method::GET, "/api/tenant".into(), Payload::None),
        A::Tenant(TenantCommand::Set {
            name,
            domain,
            conference_id_mode,
            send_emails,
            pin_length,
            migrate_meetings,
        }) => {
            let body = json!({
                "name": name, "domain": domain, "conference_id_mode": conference_id_mode,
                "send_emails_automatically": send_emails.map(OnOff::as_bool),
                "leader_pin_length": pin_length,
                "migrate_meetings_automatically": migrate_meetings.map(OnOff::as_bool),
            });
            if body
                .as_object()
                .is_some_and(|m| m.values().all(Value::is_null))
            {
                bail!(
                    "nothing to set: give at least one of --name, --domain, --conference-id-mode, \
                     --send-emails, --pin-length, --migrate-meetings"
                );
            }
            (Method::PATCH, "/api/tenant".into(), object(body))
        }
        A::Tenant(TenantCommand::Number(NumberCommand::Add {
            number,
            toll_free,
            default,
        })) => (
            Method::POST,
            "/api/tenant/numbers".into(),
            object(json!({
                "number": number,
                "kind": if *toll_free { "toll-free" } else { "toll" },
                "default": default,
            })),
        ),
        A::Tenant(TenantCommand::Number(NumberCommand::Remove { number })) => (
            Method::DELETE,
            format!("/api/tenant/numbers/{}", segment(number)),
            Payload::None,
        ),
        A::User(UserCommand::Add { email, name }) => (
            Method::POST,
            "/api/users".into(),
            object(json!({"email": email, "display_name": name})),
        ),
        A::User(UserCommand::Enable {
            email,
            name,
            provider,
            provider_numbers,
            conference_id,
            default_number,
            replace_provider,
            no_email,
        }) => {
            let provider = match provider.as_deref() {
                None => Value::Null,
                Some(p) if p.eq_ignore_ascii_case("microsoft") => json!({"kind": "microsoft"}),
                Some(name) => {
                    json!({"kind": "third-party", "name": name, "numbers": provider_numbers})
                }
            };
            (
                Method::POST,
                user(email, "/enable"),
                object(json!({
                    "display_name": name, "provider": provider, "conference_id": conference_id,
                    "default_service_number": default_number,
                    "replace_provider": replace_provider, "no_email": no_email,
                })),
            )
        }
        A::User(UserCommand::Show { email }) => (Method::GET, user(email, ""), Payload::None),
        A::User(UserCommand::List { enabled }) => (
            Method::GET,
            format!(
                "/api/users{}",
                query(&[("enabled", enabled.then(|| "true".into()))])
            ),
            Payload::None,
        ),
        A::User(UserCommand::ResetId { email, no_email }) => (
            Method::POST,
            user(email, "/reset-id"),
            object(json!({"no_email": no_email})),
        ),
        A::User(UserCommand::SetId {
            email,
            conference_id,
            no_email,
        }) => (
            Method::PUT,
            user(email, "/conference-id"),
            object(json!({"conference_id": conference_id, "no_email": no_email})),
        ),
        A::User(UserCommand::ResetPin { email, no_email }) => (
            Method::POST,
            user(email, "/reset-pin"),
            object(json!({"no_email": no_email})),
        ),
        A::User(UserCommand::SendInfo { email }) => {
            (Method::POST, user(email, "/send-info"), Payload::None)
        }
        A::User(UserCommand::Disable { email }) => {
            (Method::POST, user(email, "/disable"), Payload::None)
        }
        A::User(UserCommand::Import { file, no_email }) => {
            let csv = std::fs::read_to_string(file)
                .with_context(|| format!("reading the CSV {}", file.display()))?;
            (
                Method::POST,
                format!(
                    "/api/users/import{}",
                    query(&[("no_email", no_email.then(|| "true".into()))])
                ),
                Payload::Csv(csv),
            )
        }
        A::Meeting(MeetingCommand::Schedule {
            organizer,
            subject,
            start,
        }) => (
            Method::POST,
            "/api/meetings".into(),
            object(json!({"organizer": organizer, "subject": subject, "start": start})),
        ),
        A::Meeting(MeetingCommand::List { organizer, .. }) => (
            Method::GET,
            format!(
                "/api/meetings{}",
                query(&[("organizer", organizer.clone())])
            ),
            Payload::None,
        ),
        A::Migration(MigrationCommand::Start { email }) => (
            Method::POST,
            "/api/migrations".into(),
            object(json!({"user": email})),
        ),
        A::Migration(MigrationCommand::Status { email }) => (
            Method::GET,
            format!("/api/migrations{}", query(&[("user", email.clone())])),
            Payload::None,
        ),
        A::Migration(MigrationCommand::Run) => {
            (Method::POST, "/api/migrations/run".into(), Payload::None)
        }
        A::Outbox(OutboxCommand::List { to }) => (
            Method::GET,
            format!("/api/outbox{}", query(&[("to", to.clone())])),
            Payload::None,
        ),
        A::Outbox(OutboxCommand::Show { id }) => {
            (Method::GET, format!("/api/outbox/{id}"), Payload::None)
        }
        A::Outbox(OutboxCommand::Deliver) => {
            (Method::POST, "/api/outbox/deliver".into(), Payload::None)
        }
        A::Revocations { user } => (
            Method::GET,
            format!("/api/revocations{}", query(&[("user", user.clone())])),
            Payload::None,
        ),
        A::Lookup { conference_id } => (
            Method::GET,
            format!("/api/directory/{}", segment(conference_id)),
            Payload::None,
        ),
        A::Clock(ClockCommand::Show) => (Method::GET, "/api/clock".into(), Payload::None),
        A::Clock(ClockCommand::Advance { by }) => (
            Method::POST,
            "/api/clock/advance".into(),
            object(json!({"by": by})),
        ),
    })
}

// ------------------------------------------------------------------ text output

/// A field as text; `-` for null or missing.
fn s(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::Null => "-".into(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    if rows.is_empty() {
        out.push_str("(none)\n");
    }
    out
}

fn items(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

fn provider(v: &Value) -> String {
    match v["kind"].as_str() {
        Some("third-party") => format!("third-party: {}", s(v, "name")),
        Some(kind) => kind.to_string(),
        None => "-".into(),
    }
}

fn user_text(u: &Value) -> String {
    let enabled = if u["enabled"] == true {
        "enabled"
    } else {
        "not enabled"
    };
    let mut out = format!("{} ({})\n", s(u, "email"), s(u, "display_name"));
    out += &format!(
        "  dial-in conferencing: {enabled}, provider {}\n",
        provider(&u["provider"])
    );
    out += &format!("  conference ID: {}", s(u, "conference_id"));
    if !u["previous_conference_id"].is_null() {
        out += &format!(" (previous: {}, revoked)", s(u, "previous_conference_id"));
    }
    out += &format!("\n  leader PIN: {}\n", s(u, "leader_pin"));
    if !u["default_service_number"].is_null() {
        out += &format!(
            "  default service number: {}\n",
            s(u, "default_service_number")
        );
    }
    out
}

fn tenant_text(t: &Value) -> String {
    let on = |k: &str| if t[k] == true { "on" } else { "off" };
    let mut out = format!("{} ({})\n", s(t, "name"), s(t, "domain"));
    out += &format!("  conference ID mode: {}\n", s(t, "conference_id_mode"));
    out += &format!(
        "  send emails automatically: {}\n",
        on("send_emails_automatically")
    );
    out += &format!("  leader PIN length: {}\n", s(t, "leader_pin_length"));
    out += &format!(
        "  migrate meetings automatically: {}\n",
        on("migrate_meetings_automatically")
    );
    out += "  dial-in numbers:\n";
    for n in items(&t["dial_in_numbers"]) {
        let default = if n["default"] == true {
            ", default"
        } else {
            ""
        };
        out += &format!("    {} ({}{default})\n", s(n, "number"), s(n, "kind"));
    }
    out
}

fn job_rows(jobs: &[Value]) -> String {
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            vec![
                s(j, "id"),
                s(j, "user"),
                s(j, "state"),
                s(j, "runs"),
                s(j, "next_run_at"),
                s(j, "meetings_updated"),
                s(j, "last_error"),
            ]
        })
        .collect();
    table(
        &[
            "JOB",
            "USER",
            "STATE",
            "RUNS",
            "NEXT RUN",
            "MEETINGS",
            "LAST ERROR",
        ],
        &rows,
    )
}

fn email_note(v: &Value) -> String {
    match (&v["email_id"], &v["email_skipped"]) {
        (Value::Number(id), _) => format!("Emailed the user (outbox #{id}).\n"),
        (_, Value::String(why)) => format!("No email: {why}.\n"),
        _ => "No email (the tenant does not send emails automatically, or --no-email).\n".into(),
    }
}

fn id_change_text(v: &Value) -> String {
    let email = s(&v["user"], "email");
    if v["changed"] == false {
        return format!(
            "{email} already has conference ID {}: nothing changed.\n",
            s(v, "new_conference_id")
        );
    }
    let mut out = match &v["old_conference_id"] {
        Value::Null => format!(
            "{email} now has conference ID {}.\n",
            s(v, "new_conference_id")
        ),
        old => format!(
            "{email}: conference ID {} -> {}. {} no longer works for callers.\n",
            old.as_str().unwrap_or_default(),
            s(v, "new_conference_id"),
            old.as_str().unwrap_or_default()
        ),
    };
    out += &email_note(v);
    if let Value::Object(job) = &v["migration_job"] {
        let job = Value::Object(job.clone());
        out += &format!(
            "Meeting migration job #{} ({}) runs after {}.\n",
            s(&job, "id"),
            s(&job, "state"),
            s(&job, "next_run_at")
        );
    }
    out
}

fn render(command: &AdminCommand, v: &Value) -> String {
    use AdminCommand as A;
    match command {
        A::Tenant(_) => tenant_text(v),
        A::User(UserCommand::Add { .. }) | A::User(UserCommand::Show { .. }) => user_text(v),
        A::User(UserCommand::List { .. }) => {
            let rows: Vec<Vec<String>> = items(v)
                .iter()
                .map(|u| {
                    vec![
                        s(u, "email"),
                        s(u, "display_name"),
                        if u["enabled"] == true {
                            "yes".into()
                        } else {
                            "no".into()
                        },
                        provider(&u["provider"]),
                        s(u, "conference_id"),
                    ]
                })
                .collect();
            table(
                &["EMAIL", "NAME", "ENABLED", "PROVIDER", "CONFERENCE ID"],
                &rows,
            )
        }
        A::User(UserCommand::Enable { .. }) => {
            let u = &v["user"];
            if v["changed"] == false {
                return format!(
                    "{} is already enabled: nothing changed.\n{}",
                    s(u, "email"),
                    user_text(u)
                );
            }
            let mut out = format!(
                "Enabled {} for dial-in conferencing{}.\n",
                s(u, "email"),
                if v["created"] == true {
                    " (new user)"
                } else {
                    ""
                }
            );
            for id in items(&v["revoked"]) {
                out += &format!(
                    "Revoked the previous provider's conference ID {}.\n",
                    id.as_str().unwrap_or_default()
                );
            }
            out += &user_text(u);
            out += &format!("Leader PIN (shown this once): {}\n", s(v, "leader_pin"));
            out + &email_note(v)
        }
        A::User(UserCommand::ResetId { .. }) | A::User(UserCommand::SetId { .. }) => {
            id_change_text(v)
        }
        A::User(UserCommand::ResetPin { .. }) => format!(
            "New leader PIN for {} (shown this once, never again): {}\n{}",
            s(&v["user"], "email"),
            s(v, "leader_pin"),
            email_note(v)
        ),
        A::User(UserCommand::SendInfo { .. }) => format!(
            "Emailed conference info to {} (outbox #{}).\n",
            s(&v["user"], "email"),
            s(v, "email_id")
        ),
        A::User(UserCommand::Disable { .. }) => {
            let email = s(&v["user"], "email");
            if v["changed"] == false {
                return format!("{email} was not enabled: nothing changed.\n");
            }
            let revoked: Vec<String> = items(&v["revoked"])
                .iter()
                .filter_map(|i| i.as_str().map(String::from))
                .collect();
            format!(
                "Disabled {email}. Revoked: {}.\n",
                if revoked.is_empty() {
                    "nothing".into()
                } else {
                    revoked.join(", ")
                }
            )
        }
        A::User(UserCommand::Import { .. }) => {
            let rows: Vec<Vec<String>> = items(&v["users"])
                .iter()
                .map(|u| {
                    vec![
                        s(u, "line"),
                        s(u, "email"),
                        if u["changed"] == true {
                            "enabled".into()
                        } else {
                            "unchanged".into()
                        },
                        s(u, "conference_id"),
                        s(u, "leader_pin"),
                    ]
                })
                .collect();
            format!(
                "Imported {} users: {} created, {} enabled, {} unchanged. New PINs are shown this once.\n{}",
                items(&v["users"]).len(),
                s(v, "created"),
                s(v, "enabled"),
                s(v, "unchanged"),
                table(
                    &["LINE", "EMAIL", "RESULT", "CONFERENCE ID", "LEADER PIN"],
                    &rows
                )
            )
        }
        A::Meeting(MeetingCommand::Schedule { .. }) => format!(
            "Scheduled meeting #{} \"{}\" at {}; its invitation carries conference ID {}{}.\n",
            s(v, "id"),
            s(v, "subject"),
            s(v, "start"),
            s(v, "conference_id"),
            if v["dynamic"] == true {
                " (its own)"
            } else {
                ""
            }
        ),
        A::Meeting(MeetingCommand::List { .. }) => {
            let rows: Vec<Vec<String>> = items(v)
                .iter()
                .map(|m| {
                    vec![
                        s(m, "id"),
                        s(m, "start"),
                        s(m, "organizer"),
                        s(m, "conference_id"),
                        s(m, "invitation"),
                        s(m, "subject"),
                    ]
                })
                .collect();
            table(
                &[
                    "MEETING",
                    "START",
                    "ORGANIZER",
                    "CONFERENCE ID",
                    "INVITATION",
                    "SUBJECT",
                ],
                &rows,
            )
        }
        A::Migration(MigrationCommand::Start { .. }) => format!(
            "Migration job #{} for {} is {}; it runs after {}.\n",
            s(v, "id"),
            s(v, "user"),
            s(v, "state"),
            s(v, "next_run_at")
        ),
        A::Migration(MigrationCommand::Status { .. }) => job_rows(items(v)),
        A::Migration(MigrationCommand::Run) => {
            let jobs: Vec<Value> = items(v).iter().map(|r| r["job"].clone()).collect();
            format!(
                "Ran {} due migration job(s).\n{}",
                jobs.len(),
                job_rows(&jobs)
            )
        }
        A::Outbox(OutboxCommand::List { .. }) => {
            let rows: Vec<Vec<String>> = items(v)
                .iter()
                .map(|e| {
                    vec![
                        s(e, "id"),
                        s(e, "to"),
                        s(e, "kind"),
                        s(e, "status"),
                        s(e, "file"),
                        s(e, "subject"),
                    ]
                })
                .collect();
            table(&["EMAIL", "TO", "KIND", "STATUS", "FILE", "SUBJECT"], &rows)
        }
        A::Outbox(OutboxCommand::Show { .. }) => format!(
            "To: {}\nSubject: {}\nDate: {}\nStatus: {} (file {})\n\n{}",
            s(v, "to"),
            s(v, "subject"),
            s(v, "created_at"),
            s(v, "status"),
            s(v, "file"),
            s(v, "body")
        ),
        A::Outbox(OutboxCommand::Deliver) => {
            format!("Delivered {} queued email(s).\n", s(v, "delivered"))
        }
        A::Revocations { .. } => {
            let rows: Vec<Vec<String>> = items(v)
                .iter()
                .map(|r| {
                    vec![
                        s(r, "conference_id"),
                        s(r, "user"),
                        s(r, "cause"),
                        s(r, "at"),
                        s(r, "operation_id"),
                        s(r, "actor"),
                    ]
                })
                .collect();
            table(
                &["CONFERENCE ID", "USER", "CAUSE", "AT", "OPERATION", "ACTOR"],
                &rows,
            )
        }
        A::Lookup { .. } => match v["status"].as_str() {
            Some("valid") => format!(
                "{}: valid (organizer #{}{})\n",
                s(v, "conference_id"),
                s(v, "organizer_id"),
                if v["meeting_id"].is_null() {
                    String::new()
                } else {
                    format!(", meeting #{}", s(v, "meeting_id"))
                }
            ),
            Some("revoked") => format!(
                "{}: revoked at {} by operation #{} ({}); callers hear \"not valid\"\n",
                s(v, "conference_id"),
                s(v, "revoked_at"),
                s(v, "operation_id"),
                s(v, "cause")
            ),
            _ => format!(
                "{}: unknown; callers hear \"not valid\"\n",
                s(v, "conference_id")
            ),
        },
        A::Clock(ClockCommand::Show) => format!(
            "now: {} ({} clock)\n",
            s(v, "now"),
            if v["manual"] == true {
                "manual"
            } else {
                "real"
            }
        ),
        A::Clock(ClockCommand::Advance { .. }) => format!(
            "now: {}; ran {} due migration job(s)\n",
            s(v, "now"),
            items(&v["migrations_run"]).len()
        ),
    }
}
