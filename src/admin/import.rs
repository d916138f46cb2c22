//! Parsing a CSV of users to enable at once (the "many users" case).
//!
//! The first line names the columns; `email` is required, the others are
//! optional: `display_name`, `provider` (`microsoft` or the third-party
//! provider's name), `conference_id`, `provider_numbers` (separated by `;`),
//! `default_service_number`. Fields may be quoted with `"` (RFC 4180, `""`
//! for a quote inside). Every error names the line and column.

use super::ids::{ConferenceId, EmailAddress, PhoneNumber};

pub const COLUMNS: &[&str] = &[
    "email",
    "display_name",
    "provider",
    "conference_id",
    "provider_numbers",
    "default_service_number",
];

/// One user to enable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRow {
    pub line: usize,
    pub email: EmailAddress,
    pub display_name: Option<String>,
    /// `None` or `microsoft` for Microsoft; otherwise a third-party provider.
    pub provider: Option<String>,
    pub provider_numbers: Vec<PhoneNumber>,
    pub conference_id: Option<ConferenceId>,
    pub default_service_number: Option<PhoneNumber>,
}

/// Splits one CSV record into fields. `line` is for errors.
fn fields(record: &str, line: usize) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut field = String::new();
    let mut chars = record.chars().peekable();
    let mut quoted = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.trim().is_empty() && !was_quoted => {
                field.clear();
                quoted = true;
                was_quoted = true;
            }
            (false, ',') => {
                out.push(std::mem::take(&mut field).trim().to_string());
                was_quoted = false;
            }
            (false, '"') => {
                return Err(format!(
                    "line {line}: a '\"' inside an unquoted field: quote the whole field and write \"\" for a quote"
                ));
            }
            (false, c) => field.push(c),
        }
    }
    if quoted {
        return Err(format!(
            "line {line}: a quoted field is not closed with '\"'"
        ));
    }
    out.push(field.trim().to_string());
    Ok(out)
}

pub fn parse(text: &str) -> Result<Vec<ImportRow>, String> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    let Some((header_line, header)) = lines.next() else {
        return Err(format!(
            "the CSV is empty: its first line names the columns, e.g. email,display_name (known: {})",
            COLUMNS.join(", ")
        ));
    };
    let header = fields(header, header_line)?;
    let mut index = [None::<usize>; 6];
    for (i, name) in header.iter().enumerate() {
        let name = name.to_ascii_lowercase();
        let Some(col) = COLUMNS.iter().position(|c| *c == name) else {
            return Err(format!(
                "line {header_line}: unknown column '{name}': the columns are {}",
                COLUMNS.join(", ")
            ));
        };
        if index[col].replace(i).is_some() {
            return Err(format!("line {header_line}: column '{name}' appears twice"));
        }
    }
    if index[0].is_none() {
        return Err(format!(
            "line {header_line}: the header has no 'email' column (it names the users): e.g. email,display_name"
        ));
    }

    let mut rows: Vec<ImportRow> = Vec::new();
    let mut first_line: std::collections::HashMap<EmailAddress, usize> = Default::default();
    for (line, record) in lines {
        let values = fields(record, line)?;
        if values.len() != header.len() {
            return Err(format!(
                "line {line}: {} fields, but the header has {} columns",
                values.len(),
                header.len()
            ));
        }
        let get = |col: usize| {
            index[col]
                .map(|i| values[i].as_str())
                .filter(|v| !v.is_empty())
        };
        let at = |col: usize, e: String| format!("line {line}, column {}: {e}", COLUMNS[col]);
        let email: EmailAddress = get(0)
            .ok_or_else(|| at(0, "empty: every line needs the user's email".into()))?
            .parse()
            .map_err(|e| at(0, e))?;
        if let Some(first) = first_line.insert(email.clone(), line) {
            return Err(at(
                0,
                format!("{email} is listed twice (first on line {first})"),
            ));
        }
        let conference_id = get(3)
            .map(|v| v.parse::<ConferenceId>())
            .transpose()
            .map_err(|e| at(3, e))?;
        let provider_numbers = get(4)
            .map(|v| {
                v.split(';')
                    .map(|n| n.parse::<PhoneNumber>())
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()
            .map_err(|e| at(4, e))?
            .unwrap_or_default();
        let default_service_number = get(5)
            .map(|v| v.parse::<PhoneNumber>())
            .transpose()
            .map_err(|e| at(5, e))?;
        rows.push(ImportRow {
            line,
            email,
            display_name: get(1).map(str::to_string),
            provider: get(2).map(str::to_string),
            provider_numbers,
            conference_id,
            default_service_number,
        });
    }
    if rows.is_empty() {
        return Err("the CSV has a header but no users".into());
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quoted_fields_and_optional_columns() {
        let rows = parse(
            "email,display_name,provider,conference_id\n\
             alice@contoso.com,\"Wilber, Alice \"\"Al\"\"\",,\n\
             bob@contoso.com,Bob,Acme ACP,12345678\n",
        )
        .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0].display_name.as_deref(),
            Some("Wilber, Alice \"Al\"")
        );
        assert_eq!(rows[0].provider, None);
        assert_eq!(rows[1].provider.as_deref(), Some("Acme ACP"));
        assert_eq!(rows[1].conference_id.unwrap().to_string(), "12345678");
        assert_eq!(rows[1].line, 3);
    }

    #[test]
    fn errors_name_line_and_column() {
        let err = parse("email,conference_id\nalice@contoso.com,12x\n").unwrap_err();
        assert!(err.starts_with("line 2, column conference_id:"), "{err}");
        let err = parse("email,phone\n").unwrap_err();
        assert!(err.contains("unknown column 'phone'"), "{err}");
        let err = parse("display_name\nAlice\n").unwrap_err();
        assert!(err.contains("no 'email' column"), "{err}");
        let err = parse("email\na@x.com\nA@X.com\n").unwrap_err();
        assert!(err.contains("listed twice (first on line 2)"), "{err}");
        let err = parse("email,display_name\na@x.com\n").unwrap_err();
        assert!(err.contains("line 2: 1 fields"), "{err}");
        let err = parse("email\n\"a@x.com\n").unwrap_err();
        assert!(err.contains("not closed"), "{err}");
        assert!(parse("").unwrap_err().contains("empty"));
    }
}
