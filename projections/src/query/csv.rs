//! Reports as CSV (RFC 4180): a header line, then one line per row, the
//! same rows as the JSON answer; lines end in CRLF and a field is quoted
//! when it holds a comma, a quote, a line break or surrounding blanks.

/// A report that renders as CSV.
pub trait ToCsv {
    /// The report's rows as CSV text, with a header line.
    fn to_csv(&self) -> String;
}

/// One CSV field, quoted when needed.
fn field(value: &str) -> String {
    let needs_quotes =
        value.contains([',', '"', '\n', '\r']) || value.starts_with(' ') || value.ends_with(' ');
    if needs_quotes {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

/// CSV text of `header` and `rows`.
pub(crate) fn write(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let mut out = String::new();
    let mut line = |fields: Vec<String>| {
        let fields: Vec<String> = fields.iter().map(|f| field(f)).collect();
        out.push_str(&fields.join(","));
        out.push_str("\r\n");
    };
    line(header.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        line(row);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_what_needs_it() {
        let csv = write(
            &["a", "b"],
            vec![
                vec!["plain".to_owned(), "with, comma".to_owned()],
                vec!["say \"hi\"".to_owned(), "two\nlines".to_owned()],
                vec![" padded".to_owned(), String::new()],
            ],
        );
        assert_eq!(
            csv,
            "a,b\r\nplain,\"with, comma\"\r\n\"say \"\"hi\"\"\",\"two\nlines\"\r\n\" padded\",\r\n"
        );
    }
}
