//! `dialin calls`: the running bridge's recent call records, as a table or
//! as the API's JSON.

use serde_json::Value;

use crate::cli::CallsArgs;

use super::connect::{Local, connect};

pub async fn run(args: CallsArgs) -> anyhow::Result<()> {
    let connection = connect(
        &args.data,
        args.server.as_deref(),
        args.token.as_deref(),
        Local::Refuse,
    )
    .await?;
    let value = connection
        .client
        .get(&format!("/api/calls?limit={}", args.limit))
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", render(&value));
    }
    Ok(())
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// What each attempt entered and got: `1234567 unknown (rfc4733)`.
fn attempts(record: &Value) -> String {
    let Some(items) = record["attempts"].as_array() else {
        return "-".into();
    };
    if items.is_empty() {
        return "-".into();
    }
    items
        .iter()
        .map(|a| {
            let digits = a["digits"].as_str().unwrap_or_default();
            let digits = if digits.is_empty() { "(none)" } else { digits };
            format!(
                "{digits} {} ({})",
                text(&a["result"]),
                a["method"].as_str().unwrap_or("-")
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The meeting joined, or why the call ended.
fn detail(record: &Value) -> String {
    if let Some(joined) = record.get("joined").filter(|j| !j.is_null()) {
        let meeting = match &joined["meeting_id"] {
            Value::Null => "static".to_string(),
            id => format!("meeting {id}"),
        };
        return format!(
            "joined {} ({meeting}, organizer {})",
            text(&joined["conference_id"]),
            text(&joined["organizer_id"])
        );
    }
    if let Some(status) = record["sip_status"].as_u64() {
        return format!("INVITE answered {status}");
    }
    let by = record["hung_up_by"].as_str().unwrap_or("-");
    match record["reason"]["text"].as_str() {
        Some(reason) => format!("{by} hung up: {reason}"),
        None => format!("{by} hung up"),
    }
}

/// The table: one call a line.
pub fn render(value: &Value) -> String {
    let Some(records) = value.as_array() else {
        return format!("{value}\n");
    };
    if records.is_empty() {
        return "no calls yet\n".into();
    }
    let header = [
        "TIME", "CALL-ID", "FROM", "DIALED", "OUTCOME", "ATTEMPTS", "DETAIL",
    ];
    let rows: Vec<[String; 7]> = records
        .iter()
        .map(|r| {
            [
                text(&r["started_at"]),
                text(&r["call_id"]),
                text(&r["from"]),
                text(&r["dialed"]),
                text(&r["outcome"]),
                attempts(r),
                detail(r),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}
