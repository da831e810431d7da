//! The labeled span CSV read as whole spans, streaming: ids, parent, service, operation, times
//! and, when the file has a `pod` column, the replica each span ran on.

use std::io::Read;
use std::path::Path;

use super::super::EvalError;
use super::super::labeled_csv::{csv_error, open_csv, read_error};

/// The columns attribution reads; `label` is not among them: the truth is in the faults CSV.
pub const SPAN_COLUMNS: [&str; 7] = [
    "trace_id",
    "span_id",
    "parent_span_id",
    "service",
    "operation",
    "start_unix_nano",
    "end_unix_nano",
];

/// One span, borrowed from the line it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanRow<'a> {
    /// The trace id: 32 hex digits decoded, any other text hashed.
    pub trace_id: [u8; 16],
    /// The span id: 16 hex digits decoded, any other text hashed; never zero.
    pub span_id: [u8; 8],
    /// The parent's id, read as the span id is; None for a root.
    pub parent_span_id: Option<[u8; 8]>,
    /// The span's service.
    pub service: &'a str,
    /// The span's name.
    pub operation: &'a str,
    /// The replica it ran on (`pod` column); empty when unknown.
    pub pod: &'a str,
    /// Unix ns.
    pub start: u64,
    /// Unix ns.
    pub end: u64,
}

/// Calls `each` with every span of the file, in file order; stops at the first malformed line.
pub fn for_each_span(path: &Path, mut each: impl FnMut(&SpanRow<'_>)) -> Result<u64, EvalError> {
    let file = std::fs::File::open(path).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    parse_spans(
        path,
        std::io::BufReader::with_capacity(1 << 16, reader),
        &mut each,
    )
}

/// [`for_each_span`] on any reader; `path` only names the source in errors. Returns the number
/// of spans read.
pub fn parse_spans(
    path: &Path,
    input: impl Read,
    each: &mut impl FnMut(&SpanRow<'_>),
) -> Result<u64, EvalError> {
    let csv_error = |line: u64, message: String| csv_error(path, line, message);
    let read_error = |err: csv::Error, line: u64| read_error(path, err, line);
    let (mut reader, header) = open_csv(path, input)?;
    let mut record = csv::StringRecord::new();
    let column = |name: &str| header.iter().position(|h| h == name);
    let missing: Vec<&str> = SPAN_COLUMNS
        .iter()
        .copied()
        .filter(|c| column(c).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(csv_error(
            1,
            format!("header lacks column(s): {}", missing.join(", ")),
        ));
    }
    let at = |name: &str| column(name).unwrap_or_default();
    let [
        trace_i,
        span_i,
        parent_i,
        service_i,
        operation_i,
        start_i,
        end_i,
    ] = SPAN_COLUMNS.map(at);
    let pod_i = column("pod");
    let mut count = 0u64;
    let mut line = 1u64;
    loop {
        if !reader
            .read_record(&mut record)
            .map_err(|e| read_error(e, line + 1))?
        {
            break;
        }
        line = record.position().map_or(line + 1, csv::Position::line);
        if record.len() != header.len() {
            return Err(csv_error(
                line,
                format!("{} fields, the header has {}", record.len(), header.len()),
            ));
        }
        let field = |i: usize| record.get(i).unwrap_or_default();
        let number = |i: usize| {
            field(i).parse::<u64>().map_err(|_| {
                csv_error(
                    line,
                    format!("`{}` is not a number: {:?}", header[i], field(i)),
                )
            })
        };
        let (start, end) = (number(start_i)?, number(end_i)?);
        let span_id = field(span_i);
        if span_id.is_empty() {
            return Err(csv_error(line, "`span_id` is empty".to_string()));
        }
        let parent = field(parent_i);
        each(&SpanRow {
            trace_id: id16(field(trace_i)),
            span_id: id8(span_id),
            parent_span_id: (!parent.is_empty()).then(|| id8(parent)),
            service: field(service_i),
            operation: field(operation_i),
            pod: pod_i.map(field).unwrap_or_default(),
            start,
            end,
        });
        count += 1;
    }
    Ok(count)
}

/// 32 hex digits decoded; any other text hashed, so ids of any form keep their identity.
fn id16(text: &str) -> [u8; 16] {
    let mut id = [0u8; 16];
    if text.len() == 32 && const_hex::decode_to_slice(text, &mut id).is_ok() {
        return id;
    }
    id[..8].copy_from_slice(&fnv(text, 0).to_be_bytes());
    id[8..].copy_from_slice(&fnv(text, 1).to_be_bytes());
    id
}

/// 16 hex digits decoded; any other text hashed. Zero, which marks a missing id, is mapped to
/// one.
fn id8(text: &str) -> [u8; 8] {
    let mut id = [0u8; 8];
    if !(text.len() == 16 && const_hex::decode_to_slice(text, &mut id).is_ok()) {
        id = fnv(text, 0).to_be_bytes();
    }
    if id == [0; 8] {
        id[7] = 1;
    }
    id
}

/// FNV-1a over `salt` then `text`.
fn fnv(text: &str, salt: u8) -> u64 {
    std::iter::once(salt)
        .chain(text.bytes())
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Service, parent, pod and end of each span read.
    type Read = (String, Option<[u8; 8]>, String, u64);

    fn read(text: &str) -> Result<Vec<Read>, EvalError> {
        let mut rows = Vec::new();
        parse_spans(Path::new("s.csv"), text.as_bytes(), &mut |r| {
            rows.push((
                r.service.to_string(),
                r.parent_span_id,
                r.pod.to_string(),
                r.end,
            ));
        })?;
        Ok(rows)
    }

    #[test]
    fn spans_are_read_with_hex_or_other_ids() {
        let text = "trace_id,span_id,parent_span_id,service,operation,start_unix_nano,end_unix_nano,label,pod\n\
                    0102030405060708090a0b0c0d0e0f10,0000000000000001,,web,GET,5,10,0,web-1\n\
                    trace-7,child,0000000000000001,db,q,6,9,1,db-0\n";
        let rows = read(text).unwrap();
        assert_eq!(rows[0], ("web".into(), None, "web-1".into(), 10));
        assert_eq!(rows[1].1, Some([0, 0, 0, 0, 0, 0, 0, 1]));
        assert_eq!(
            id8("0000000000000000"),
            [0, 0, 0, 0, 0, 0, 0, 1],
            "never zero"
        );
        assert_eq!(id8("child"), id8("child"));
        assert_ne!(id16("trace-7"), id16("trace-8"));
    }

    #[test]
    fn a_malformed_span_names_its_line() {
        let header =
            "trace_id,span_id,parent_span_id,service,operation,start_unix_nano,end_unix_nano\n";
        let err = read(&format!("{header}t,a,,s,o,1,2\nt,b,a,s,o,x,2\n")).unwrap_err();
        assert!(
            err.to_string().starts_with("s.csv:3: `start_unix_nano`"),
            "{err}"
        );
        let err = read("trace_id,span_id\nt,a\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("header lacks column(s): parent_span_id"),
            "{err}"
        );
        assert!(!err.is_config(), "the data, not what it is judged by");
    }
}
