//! The labeled span CSV that `tracescale eval` reads and `tracescale synth` writes.
//!
//! RFC 4180 CSV through the `csv` crate, both ways: a field holding a comma, a quote or a line
//! break is quoted, so any span or service name survives the round trip. The schema (columns,
//! units, labels) is in the eval README.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, Read, Write};
use std::path::Path;

use super::EvalError;

/// Columns every labeled span CSV has.
pub const REQUIRED_COLUMNS: [&str; 8] = [
    "trace_id",
    "span_id",
    "parent_span_id",
    "service",
    "operation",
    "start_unix_nano",
    "end_unix_nano",
    "label",
];

/// One labeled span, with its strings interned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    /// Index into [`Spans::operations`].
    pub operation: u32,
    /// `end − start`, 0 when the end is before the start.
    pub duration_ns: u64,
    /// The span's end time.
    pub end_unix_nano: u64,
    /// True for label 1.
    pub label: bool,
    /// Index into [`Spans::faults`], if the span is in a fault's window.
    pub fault: Option<u32>,
}

/// A labeled span stream, in file order.
#[derive(Debug, Clone, Default)]
pub struct Spans {
    /// Distinct `(service, operation)` pairs.
    pub operations: Vec<(String, String)>,
    /// Distinct fault ids.
    pub faults: Vec<String>,
    /// True when the file has a `fault_id` column.
    pub has_fault_column: bool,
    /// The rows.
    pub rows: Vec<Row>,
}

/// A CSV writer in the dialect the reader expects: comma-separated, `\n`-terminated, fields
/// quoted only when they must be.
pub fn writer<W: Write>(output: W) -> csv::Writer<W> {
    csv::WriterBuilder::new()
        .has_headers(false)
        .buffer_capacity(1 << 16)
        .from_writer(output)
}

/// Reads a labeled span CSV (gzip when the name ends in `.gz`), at most `limit` rows.
pub fn read_csv(path: &Path, limit: Option<u64>) -> Result<Spans, EvalError> {
    let file = File::open(path).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    parse_csv(
        path,
        std::io::BufReader::with_capacity(1 << 16, reader),
        limit,
    )
}

/// [`read_csv`] on any reader; `path` only names the source in errors.
pub fn parse_csv(path: &Path, input: impl BufRead, limit: Option<u64>) -> Result<Spans, EvalError> {
    let csv_error = |line: u64, message: String| csv_error(path, line, message);
    let read_error = |err: csv::Error, line: u64| read_error(path, err, line);
    let (mut reader, header) = open_csv(path, input)?;
    let mut record = csv::StringRecord::new();
    let column = |name: &str| header.iter().position(|h| h == name);
    let mut idx = [0usize; 8];
    let missing: Vec<&str> = REQUIRED_COLUMNS
        .iter()
        .zip(idx.iter_mut())
        .filter_map(|(name, slot)| match column(name) {
            Some(i) => {
                *slot = i;
                None
            }
            None => Some(*name),
        })
        .collect();
    if !missing.is_empty() {
        return Err(csv_error(
            1,
            format!("header lacks column(s): {}", missing.join(", ")),
        ));
    }
    let [_, _, _, service_i, operation_i, start_i, end_i, label_i] = idx;
    let fault_i = column("fault_id");
    let width = header.len();

    let mut spans = Spans {
        has_fault_column: fault_i.is_some(),
        ..Spans::default()
    };
    let mut op_index: HashMap<String, HashMap<String, u32>> = HashMap::new();
    let mut fault_index: HashMap<String, u32> = HashMap::new();
    let limit = limit.unwrap_or(u64::MAX);
    let mut count = 0u64;
    let mut line_no = 1u64;
    while count < limit {
        if !reader
            .read_record(&mut record)
            .map_err(|e| read_error(e, line_no + 1))?
        {
            break;
        }
        line_no = record.position().map_or(line_no + 1, csv::Position::line);
        if record.len() != width {
            return Err(csv_error(
                line_no,
                format!("{} fields, the header has {width}", record.len()),
            ));
        }
        let field = |i: usize| record.get(i).unwrap_or_default();
        let number = |i: usize| {
            field(i).parse::<u64>().map_err(|_| {
                csv_error(
                    line_no,
                    format!("`{}` is not a number: {:?}", header[i], field(i)),
                )
            })
        };
        let start = number(start_i)?;
        let end = number(end_i)?;
        let label = match field(label_i) {
            "0" => false,
            "1" => true,
            other => {
                return Err(csv_error(
                    line_no,
                    format!("`label` must be 0 or 1, not {other:?}"),
                ));
            }
        };
        let (service, op) = (field(service_i), field(operation_i));
        let by_op = match op_index.get_mut(service) {
            Some(m) => m,
            None => op_index.entry(service.to_string()).or_default(),
        };
        let operation = match by_op.get(op) {
            Some(&i) => i,
            None => {
                let i = spans.operations.len() as u32;
                by_op.insert(op.to_string(), i);
                spans.operations.push((service.to_string(), op.to_string()));
                i
            }
        };
        let fault = match fault_i.map(field) {
            None | Some("") => None,
            Some(f) => Some(match fault_index.get(f) {
                Some(&i) => i,
                None => {
                    let i = spans.faults.len() as u32;
                    fault_index.insert(f.to_string(), i);
                    spans.faults.push(f.to_string());
                    i
                }
            }),
        };
        spans.rows.push(Row {
            operation,
            duration_ns: end.saturating_sub(start),
            end_unix_nano: end,
            label,
            fault,
        });
        count += 1;
    }
    Ok(spans)
}

/// A CSV reader over `input` past its header, and the header's names, trimmed. The readers of
/// labeled spans share it, so a file's errors read alike whichever command reads it.
pub(crate) fn open_csv<R: Read>(
    path: &Path,
    input: R,
) -> Result<(csv::Reader<R>, Vec<String>), EvalError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(input);
    let mut record = csv::StringRecord::new();
    if !reader
        .read_record(&mut record)
        .map_err(|e| read_error(path, e, 1))?
    {
        return Err(csv_error(
            path,
            1,
            "empty file: expected a header".to_string(),
        ));
    }
    let header = record.iter().map(|h| h.trim().to_string()).collect();
    Ok((reader, header))
}

/// A malformed row of `path` at `line`.
pub(crate) fn csv_error(path: &Path, line: u64, message: String) -> EvalError {
    EvalError::Csv {
        path: path.to_path_buf(),
        line,
        message,
    }
}

/// A read error at about `line`: an I/O error as such, anything else as a malformed row at the
/// line the parser names.
pub(crate) fn read_error(path: &Path, err: csv::Error, line: u64) -> EvalError {
    let line = err.position().map_or(line, csv::Position::line);
    let message = err.to_string();
    match err.into_kind() {
        csv::ErrorKind::Io(source) => EvalError::Io {
            path: path.to_path_buf(),
            source,
        },
        _ => csv_error(path, line, message),
    }
}

#[cfg(test)]
pub(super) mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const HEADER: &str = "trace_id,span_id,parent_span_id,service,operation,start_unix_nano,end_unix_nano,label,fault_id\n";

    pub(in crate::eval) fn parse(body: &str) -> Result<Spans, EvalError> {
        let text = format!("{HEADER}{body}");
        parse_csv(Path::new("t.csv"), text.as_bytes(), None)
    }

    #[test]
    fn a_malformed_row_names_its_line() {
        let err = parse("t,a,,s,o,0,10,1,\nt,b,,s,o,x,10,0,\n").unwrap_err();
        assert!(err.to_string().starts_with("t.csv:3: "), "{err}");
        let err = parse("t,a,,s,o,0,10,2,\n").unwrap_err();
        assert!(err.to_string().contains("t.csv:2: `label`"), "{err}");
        let err = parse("t,a,,s,o,0,10\n").unwrap_err();
        assert!(err.to_string().contains("7 fields"), "{err}");
        let err = parse_csv(Path::new("t.csv"), &b"service,label\n"[..], None).unwrap_err();
        assert!(err.to_string().contains("header lacks"), "{err}");
    }

    #[test]
    fn a_limit_stops_reading_and_operations_are_interned() {
        let text = format!("{HEADER}t,a,,s,o,5,10,0,\nt,b,,s,p,0,10,0,\nt,c,,s,o,0,10,0,\n");
        let spans = parse_csv(Path::new("t.csv"), text.as_bytes(), Some(2)).unwrap();
        assert_eq!(spans.rows.len(), 2);
        assert_eq!(spans.rows[0].duration_ns, 5);
        assert_eq!(spans.operations.len(), 2);
        let all = parse_csv(Path::new("t.csv"), text.as_bytes(), None).unwrap();
        assert_eq!(all.rows[2].operation, 0);
    }

    #[test]
    fn names_with_commas_and_quotes_survive_the_round_trip() {
        let mut w = writer(Vec::new());
        w.write_record(REQUIRED_COLUMNS).unwrap();
        w.write_record(["t", "a", "", "db, primary", "SELECT a, b", "0", "10", "1"])
            .unwrap();
        w.write_record(["t", "b", "a", "web", "say \"hi\"\nthen go", "5", "10", "0"])
            .unwrap();
        let bytes = w.into_inner().unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains("\"db, primary\",\"SELECT a, b\""), "{text}");
        assert!(text.contains("\"say \"\"hi\"\"\nthen go\""), "{text}");
        let spans = parse_csv(Path::new("t.csv"), bytes.as_slice(), None).unwrap();
        assert_eq!(
            spans.operations,
            [
                ("db, primary".to_string(), "SELECT a, b".to_string()),
                ("web".to_string(), "say \"hi\"\nthen go".to_string()),
            ]
        );
        assert_eq!(spans.rows[1].duration_ns, 5);
        // A quoted field is read, not refused; a line number after a multi-line field counts
        // the lines of the file.
        let err = parse(
            "t,a,,\"s, 1\",\"o \"\"x\"\"\",0,10,1,\n\
             t,b,,\"s\nt\",o,0,10,0,\n\
             t,c,,s,o,0,10,7,\n",
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("t.csv:5: `label`"), "{err}");
    }
}
