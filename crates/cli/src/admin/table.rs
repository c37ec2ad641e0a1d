//! The output layer of the admin commands: a result (one JSON object) as JSON, or as aligned
//! text: its plain fields as `key  value` lines, then each list of objects as a table (one
//! column per field: identifying fields such as `name` first, then the others by name). JSON is printed with `--output json`
//! and whenever stdout is not a terminal, so scripts always read JSON.

use std::io::IsTerminal;

use serde_json::{Map, Value};

use super::args::OutputFormat;

/// Longest cell printed in a table (longer values end in "…").
const MAX_CELL: usize = 80;

/// Fields that identify a row, shown first in this order.
const LEADING: [&str; 9] = [
    "name",
    "client_id",
    "broker_set",
    "broker_id",
    "node_id",
    "topic",
    "group",
    "queue_id",
    "message_id",
];

/// The format to print in: the one asked for, else tables on a terminal and JSON otherwise.
fn effective(asked: Option<OutputFormat>) -> OutputFormat {
    asked.unwrap_or_else(|| {
        if std::io::stdout().is_terminal() {
            OutputFormat::Table
        } else {
            OutputFormat::Json
        }
    })
}

/// Prints `value` on stdout in the asked format (see the module docs).
///
/// # Errors
/// The value cannot be serialized (never for values built by the admin commands).
pub fn print_output(value: &Value, asked: Option<OutputFormat>) -> anyhow::Result<()> {
    println!("{}", format_output(value, effective(asked))?);
    Ok(())
}

/// `value` as JSON (pretty) or as aligned text.
///
/// # Errors
/// The value cannot be serialized.
pub fn format_output(value: &Value, format: OutputFormat) -> anyhow::Result<String> {
    Ok(match format {
        OutputFormat::Json => serde_json::to_string_pretty(value)?,
        OutputFormat::Table => text(value),
    })
}

fn is_rows(v: &Value) -> bool {
    v.as_array()
        .is_some_and(|a| !a.is_empty() && a.iter().all(Value::is_object))
}

fn text(value: &Value) -> String {
    match value {
        Value::Object(map) => object_text(map),
        v if is_rows(v) => table(v.as_array().map_or(&[][..], Vec::as_slice)),
        other => cell(other),
    }
}

fn object_text(map: &Map<String, Value>) -> String {
    let plain: Vec<(&String, &Value)> = map.iter().filter(|(_, v)| !is_rows(v)).collect();
    let width = plain
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut out: Vec<String> = plain
        .iter()
        .map(|(k, v)| format!("{k:<width$}  {}", cell(v)))
        .collect();
    for (k, v) in map.iter().filter(|(_, v)| is_rows(v)) {
        let rows = v.as_array().map_or(&[][..], Vec::as_slice);
        if !out.is_empty() {
            out.push(String::new());
        }
        out.push(format!("{} ({})", k.to_uppercase(), rows.len()));
        out.push(table(rows));
    }
    out.join("\n")
}

/// A value in one cell: strings bare, null as "-", lists of plain values comma-separated,
/// anything else as compact JSON; cut at [`MAX_CELL`] characters.
fn cell(v: &Value) -> String {
    let s = match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(a) if a.iter().all(|x| !x.is_object() && !x.is_array()) => {
            a.iter().map(cell).collect::<Vec<_>>().join(",")
        }
        other => other.to_string(),
    };
    if s.chars().count() > MAX_CELL {
        let cut: String = s.chars().take(MAX_CELL - 1).collect();
        format!("{cut}…")
    } else {
        s
    }
}

fn table(rows: &[Value]) -> String {
    let mut columns: Vec<&str> = Vec::new();
    for r in rows {
        if let Some(obj) = r.as_object() {
            for k in obj.keys() {
                if !columns.contains(&k.as_str()) {
                    columns.push(k);
                }
            }
        }
    }
    columns.sort_by_key(|c| LEADING.iter().position(|l| l == c).unwrap_or(LEADING.len()));
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            columns
                .iter()
                .map(|c| r.get(*c).map_or_else(String::new, cell))
                .collect()
        })
        .collect();
    let headers: Vec<String> = columns.iter().map(|c| c.to_uppercase()).collect();
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| {
            cells
                .iter()
                .map(|row| row[i].chars().count())
                .chain([headers[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |row: &[String]| -> String {
        row.iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    std::iter::once(line(&headers))
        .chain(cells.iter().map(|r| line(r)))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn given_a_result_with_a_list_when_shown_as_table_should_align_columns() {
        let v = json!({
            "revision": 7,
            "topics": [
                {"name": "orders", "type": "NORMAL", "queues": 8, "tags": ["a", "b"]},
                {"name": "t", "type": "FIFO", "queues": 16, "extra": null},
            ],
        });
        let out = format_output(&v, OutputFormat::Table).unwrap();
        let expected = "\
revision  7

TOPICS (2)
NAME    QUEUES  TAGS  TYPE    EXTRA
orders  8       a,b   NORMAL
t       16            FIFO    -";
        assert_eq!(out, expected);
    }

    #[test]
    fn given_json_output_when_formatted_should_be_the_json_object() {
        let v = json!({"name": "x", "nested": {"a": 1}});
        let out = format_output(&v, OutputFormat::Json).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), v);
        let t = format_output(&v, OutputFormat::Table).unwrap();
        assert_eq!(t, "name    x\nnested  {\"a\":1}");
        let long = json!({"k": "x".repeat(200)});
        let t = format_output(&long, OutputFormat::Table).unwrap();
        assert!(t.ends_with('…') && t.chars().count() < 100, "{t}");
    }
}
