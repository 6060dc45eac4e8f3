//! Reports as CSV (RFC 4180), written by the `csv` crate from the report
//! rows' own `Serialize`: a header line of the row's field names, in
//! field order, then one line per row, the same rows as the JSON answer.
//! Lines end in CRLF; a field is quoted when it holds a comma, a quote or
//! a line break; a missing value is an empty field.

use serde::Serialize;

/// A report whose rows render as CSV.
pub trait ToCsv {
    /// The type of one row (one CSV line); its default value gives the
    /// header of a report without rows.
    type Row: Serialize + Default;

    /// The report's rows, in answer order.
    fn rows(&self) -> &[Self::Row];

    /// The report's rows as CSV text, with a header line.
    fn to_csv(&self) -> String {
        write(self.rows())
    }
}

/// CSV lines of `rows`, with or without the header line their field
/// names make.
fn lines<T: Serialize>(rows: &[T], header: bool) -> String {
    let mut out = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .has_headers(header)
        .from_writer(Vec::new());
    for row in rows {
        // Rows are flat structs of numbers, strings, dates and ids, which
        // the csv serializer always takes; a failure would be a bug here.
        if let Err(error) = out.serialize(row) {
            tracing::error!(%error, "a report row does not serialise as CSV");
        }
    }
    let bytes = match out.into_inner() {
        Ok(bytes) => bytes,
        Err(error) => error.into_inner().get_ref().clone(),
    };
    String::from_utf8_lossy(&bytes).into_owned()
}

/// CSV text of `rows`: the header line (from the row type's field names,
/// also when there are no rows), then one line per row.
fn write<T: Serialize + Default>(rows: &[T]) -> String {
    let with_header = lines(&[T::default()], true);
    let header = with_header
        .split_inclusive("\r\n")
        .next()
        .unwrap_or_default();
    format!("{header}{}", lines(rows, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default, Serialize)]
    struct Row {
        a: &'static str,
        b: Option<&'static str>,
        n: i64,
    }

    #[test]
    fn header_then_rows_quoting_only_what_needs_it() {
        let csv = write(&[
            Row {
                a: "plain",
                b: Some("with, comma"),
                n: 1,
            },
            Row {
                a: "say \"hi\"",
                b: Some("two\nlines"),
                n: -2,
            },
            Row {
                a: "none",
                b: None,
                n: 0,
            },
        ]);
        assert_eq!(write::<Row>(&[]), "a,b,n\r\n");
        assert_eq!(
            csv,
            "a,b,n\r\nplain,\"with, comma\",1\r\n\"say \"\"hi\"\"\",\"two\nlines\",-2\r\nnone,,0\r\n"
        );
    }
}
