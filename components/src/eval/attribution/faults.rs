//! The faults CSV: one injected fault per line, the truth an attribution is scored against.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use super::super::EvalError;

/// Columns every faults CSV has.
pub const FAULT_COLUMNS: [&str; 5] = [
    "fault_id",
    "start_unix_nano",
    "end_unix_nano",
    "service",
    "fault_type",
];

/// One injected fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Its id.
    pub id: String,
    /// Start of its window, Unix ns.
    pub start: u64,
    /// End of its window, Unix ns (exclusive).
    pub end: u64,
    /// The service it was injected into: the right culprit.
    pub service: String,
    /// Its kind (`cpu_contention`, `network_delay`, …).
    pub fault_type: String,
    /// True when it should slow requests down (`latency_fault = 1`, or no such column).
    pub latency: bool,
}

/// The faults' windows, to find those containing an instant without scanning them all.
#[derive(Debug, Clone, Default)]
pub struct Windows {
    /// (start, end, index in the faults), by start.
    by_start: Vec<(u64, u64, usize)>,
    longest: u64,
}

impl Windows {
    /// The windows of `faults`.
    pub fn new(faults: &[Fault]) -> Self {
        let mut by_start: Vec<(u64, u64, usize)> = faults
            .iter()
            .enumerate()
            .map(|(i, f)| (f.start, f.end, i))
            .collect();
        by_start.sort_unstable();
        let longest = faults.iter().map(|f| f.end - f.start).max().unwrap_or(0);
        Self { by_start, longest }
    }

    /// The indexes of the faults whose window `[start, end)` holds `t`.
    pub fn containing(&self, t: u64) -> impl Iterator<Item = usize> + '_ {
        let from = self
            .by_start
            .partition_point(|w| w.0.saturating_add(self.longest) <= t);
        let to = self.by_start.partition_point(|w| w.0 <= t);
        self.by_start[from..to.max(from)]
            .iter()
            .filter(move |w| w.0 <= t && t < w.1)
            .map(|w| w.2)
    }
}

/// Reads a faults CSV (gzip when the name ends in `.gz`). Columns are found by their header
/// name; `latency_fault` (`0` or `1`) is optional, other columns are ignored.
pub fn read_faults(path: &Path) -> Result<Vec<Fault>, EvalError> {
    let file = std::fs::File::open(path).map_err(|source| EvalError::FaultsFile {
        path: path.to_path_buf(),
        source,
    })?;
    let reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    parse_faults(path, reader)
}

/// [`read_faults`] on any reader; `path` only names the source in errors.
pub fn parse_faults(path: &Path, input: impl Read) -> Result<Vec<Fault>, EvalError> {
    let error = |line: u64, message: String| EvalError::Faults {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(input);
    let mut record = csv::StringRecord::new();
    let read = |reader: &mut csv::Reader<_>, record: &mut csv::StringRecord, line: u64| {
        reader.read_record(record).map_err(|e| {
            let line = e.position().map_or(line, csv::Position::line);
            let message = e.to_string();
            match e.into_kind() {
                csv::ErrorKind::Io(source) => EvalError::FaultsFile {
                    path: path.to_path_buf(),
                    source,
                },
                _ => error(line, message),
            }
        })
    };
    if !read(&mut reader, &mut record, 1)? {
        return Err(error(1, "empty file: expected a header".to_string()));
    }
    let header: Vec<String> = record.iter().map(|h| h.trim().to_string()).collect();
    let column = |name: &str| header.iter().position(|h| h == name);
    let missing: Vec<&str> = FAULT_COLUMNS
        .iter()
        .copied()
        .filter(|c| column(c).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(error(
            1,
            format!(
                "header lacks column(s): {}; a faults CSV has {}, and optionally latency_fault",
                missing.join(", "),
                FAULT_COLUMNS.join(", ")
            ),
        ));
    }
    let at = |name: &str| column(name).unwrap_or_default();
    let (id_i, start_i, end_i, service_i, type_i) = (
        at("fault_id"),
        at("start_unix_nano"),
        at("end_unix_nano"),
        at("service"),
        at("fault_type"),
    );
    let latency_i = column("latency_fault");
    let mut faults = Vec::new();
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut line = 1u64;
    while read(&mut reader, &mut record, line + 1)? {
        line = record.position().map_or(line + 1, csv::Position::line);
        if record.len() != header.len() {
            return Err(error(
                line,
                format!("{} fields, the header has {}", record.len(), header.len()),
            ));
        }
        let field = |i: usize| record.get(i).unwrap_or_default().trim();
        let number = |i: usize| {
            field(i).parse::<u64>().map_err(|_| {
                error(
                    line,
                    format!(
                        "`{}` must be a non-negative integer (Unix nanoseconds), not {:?}",
                        header[i],
                        field(i)
                    ),
                )
            })
        };
        let (start, end) = (number(start_i)?, number(end_i)?);
        if end <= start {
            return Err(error(
                line,
                format!("`end_unix_nano` ({end}) must be after `start_unix_nano` ({start})"),
            ));
        }
        let latency = match latency_i.map(field) {
            None | Some("1") => true,
            Some("0") => false,
            Some(other) => {
                return Err(error(
                    line,
                    format!("`latency_fault` must be 0 or 1, not {other:?}"),
                ));
            }
        };
        let id = field(id_i).to_string();
        if id.is_empty() {
            return Err(error(line, "`fault_id` is empty".to_string()));
        }
        if let Some(first) = seen.insert(id.clone(), line) {
            return Err(error(
                line,
                format!("fault {id:?} is listed twice (first on line {first})"),
            ));
        }
        let service = field(service_i).to_string();
        if service.is_empty() {
            return Err(error(line, "`service` is empty".to_string()));
        }
        faults.push(Fault {
            id,
            start,
            end,
            service,
            fault_type: field(type_i).to_string(),
            latency,
        });
    }
    Ok(faults)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn parse(text: &str) -> Result<Vec<Fault>, EvalError> {
        parse_faults(Path::new("f.csv"), text.as_bytes())
    }

    #[test]
    fn faults_are_read_by_column_name() {
        let faults = parse(
            "fault_type,service,fault_id,end_unix_nano,start_unix_nano,latency_fault,pod\n\
             cpu_contention,cart,f1,20,10,1,cart-1\n\
             exception,cart,f2,40,30,0,cart-1\n",
        )
        .unwrap();
        assert_eq!(faults.len(), 2);
        assert_eq!(
            faults[0],
            Fault {
                id: "f1".into(),
                start: 10,
                end: 20,
                service: "cart".into(),
                fault_type: "cpu_contention".into(),
                latency: true,
            }
        );
        assert!(!faults[1].latency);
        let without =
            parse("fault_id,start_unix_nano,end_unix_nano,service,fault_type\nf,1,2,s,t\n");
        assert!(
            without.unwrap()[0].latency,
            "no latency_fault column: all count"
        );
    }

    #[test]
    fn windows_find_the_faults_holding_an_instant() {
        let fault = |start, end| Fault {
            id: format!("f{start}"),
            start,
            end,
            service: "s".into(),
            fault_type: "t".into(),
            latency: true,
        };
        let faults = [fault(50, 60), fault(10, 40), fault(30, 35), fault(70, 71)];
        let w = Windows::new(&faults);
        let at = |t| {
            let mut v: Vec<usize> = w.containing(t).collect();
            v.sort_unstable();
            v
        };
        assert_eq!(at(5), Vec::<usize>::new());
        assert_eq!(at(10), [1]);
        assert_eq!(at(32), [1, 2]);
        assert_eq!(at(40), Vec::<usize>::new(), "the end is not in the window");
        assert_eq!(at(59), [0]);
        assert_eq!(at(70), [3]);
        assert_eq!(Windows::new(&[]).containing(3).count(), 0);
    }

    #[test]
    fn a_bad_file_names_its_line_and_what_is_wrong() {
        let header = "fault_id,start_unix_nano,end_unix_nano,service,fault_type,latency_fault\n";
        let err = parse("fault_id,service\nf1,cart\n").unwrap_err();
        assert!(err.is_config());
        assert!(
            err.to_string().starts_with(
                "f.csv:1: header lacks column(s): start_unix_nano, end_unix_nano, fault_type"
            ),
            "{err}"
        );
        let err = parse(&format!(
            "{header}f1,10,20,cart,cpu,1\nf2,1e9,20,cart,cpu,1\n"
        ))
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("f.csv:3: `start_unix_nano` must be a non-negative integer"),
            "{err}"
        );
        let err = parse(&format!("{header}f1,30,20,cart,cpu,1\n")).unwrap_err();
        assert!(
            err.to_string().starts_with("f.csv:2: `end_unix_nano`"),
            "{err}"
        );
        let err = parse(&format!("{header}f1,10,20,cart,cpu,yes\n")).unwrap_err();
        assert!(
            err.to_string().contains("`latency_fault` must be 0 or 1"),
            "{err}"
        );
        let err = parse(&format!("{header}f1,10,20,cart,cpu\n")).unwrap_err();
        assert!(err.to_string().starts_with("f.csv:2: 5 fields"), "{err}");
        let err = parse(&format!(
            "{header}f1,10,20,cart,cpu,1\nf1,30,40,cart,cpu,1\n"
        ))
        .unwrap_err();
        assert!(
            err.to_string().contains("listed twice (first on line 2)"),
            "{err}"
        );
        let err = parse("").unwrap_err();
        assert!(err.to_string().contains("empty file"), "{err}");
    }
}
