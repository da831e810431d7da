//! Reading a recording: decompression, framing within a size limit, decoding. Blocking code,
//! run on a thread of its own, so that a large file or a slow disk never holds up the runtime.
//! The `file` receiver replays what it reads; `hstree` learns from it before serving.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tokio::sync::mpsc;
use tracescale_core::signal::Traces;

use super::config::{Compression, Format};
use crate::receivers::otlp::body::{decode_json, decode_proto};
use crate::receivers::otlp::validate;

/// What the reader hands the replaying task, in file order.
#[derive(Debug)]
pub(crate) enum Item {
    /// The valid spans of one line.
    Batch {
        traces: Traces,
        /// Spans in the line, valid or not.
        received: usize,
        /// Spans dropped as invalid (bad ids, end before start).
        invalid: usize,
        /// The earliest start time of the kept spans, for pacing.
        start_unix_nano: Option<u64>,
    },
    /// A line that is not a message; the next line is read.
    Malformed { line: u64, reason: String },
    /// The file cannot be read past this line: it ends inside a compressed stream or a
    /// message, or the disk failed. Nothing follows.
    Unreadable { line: u64, error: io::Error },
}

/// What the reader needs.
pub(crate) struct Source {
    pub file: File,
    pub compression: Compression,
    pub format: Format,
    pub max_bytes: usize,
    /// `Some(poll interval)` to wait for more at the end of the file instead of finishing.
    pub follow: Option<Duration>,
}

/// Reads `source` to its end (or, when following, until `tx` closes), sending every item.
pub(crate) fn run(source: Source, tx: mpsc::Sender<Item>) {
    let Source {
        file,
        compression,
        format,
        max_bytes,
        follow,
    } = source;
    let capacity = 256 * 1024;
    let reader: Box<dyn BufRead> = match compression {
        Compression::None => Box::new(BufReader::with_capacity(capacity, file)),
        Compression::Gzip => Box::new(BufReader::with_capacity(
            capacity,
            flate2::read::MultiGzDecoder::new(BufReader::new(file)),
        )),
        Compression::Zstd => match zstd::stream::read::Decoder::new(file) {
            Ok(decoder) => Box::new(BufReader::with_capacity(capacity, decoder)),
            Err(error) => {
                let _ = tx.blocking_send(Item::Unreadable { line: 1, error });
                return;
            }
        },
    };
    match format {
        Format::OtlpJson => read_lines(reader, max_bytes, follow, &tx),
        Format::OtlpProto => read_messages(reader, max_bytes, &tx),
    }
}

/// The first bytes of a decision line the `file` exporter writes next to traces.
const DECISION_LINE: &[u8] = br#"{"signal":"decision""#;

fn read_lines(mut reader: Box<dyn BufRead>, max: usize, follow: Option<Duration>, tx: &Tx) {
    let mut lines = Lines::new(max);
    let mut number = 0u64;
    loop {
        let line = match lines.next(&mut reader) {
            Ok(Some(line)) => line,
            Ok(None) => match follow {
                Some(poll) if !tx.is_closed() => {
                    std::thread::sleep(poll);
                    continue;
                }
                Some(_) => return,
                None => match lines.rest() {
                    Some(line) => line,
                    None => return,
                },
            },
            Err(error) => {
                let _ = tx.blocking_send(Item::Unreadable {
                    line: number + 1,
                    error,
                });
                return;
            }
        };
        number += 1;
        let item = match line {
            Line::TooLong => Item::Malformed {
                line: number,
                reason: format!("longer than max_line_bytes ({max} bytes)"),
            },
            Line::Text(text) => {
                let text = text.trim_ascii();
                if text.is_empty() || text.starts_with(DECISION_LINE) {
                    continue;
                }
                match decode_json(text) {
                    Ok(request) => batch(request),
                    Err(reason) => Item::Malformed {
                        line: number,
                        reason,
                    },
                }
            }
        };
        if tx.blocking_send(item).is_err() {
            return;
        }
    }
}

type Tx = mpsc::Sender<Item>;

/// Length-delimited protobuf: a varint length, then that many bytes, as prost's
/// `encode_length_delimited` writes them.
fn read_messages(mut reader: Box<dyn BufRead>, max: usize, tx: &Tx) {
    let mut number = 0u64;
    let mut buf = Vec::new();
    loop {
        let unreadable = |error| Item::Unreadable {
            line: number + 1,
            error,
        };
        let len = match read_varint(&mut reader) {
            Ok(Some(len)) => len,
            Ok(None) => return,
            Err(error) => {
                let _ = tx.blocking_send(unreadable(error));
                return;
            }
        };
        number += 1;
        let item = if len > max as u64 {
            // Skipped without holding it: the framing is intact, the message is not wanted.
            match io::copy(&mut (&mut reader).take(len), &mut io::sink()) {
                Ok(n) if n == len => Item::Malformed {
                    line: number,
                    reason: format!("{len} bytes, longer than max_line_bytes ({max} bytes)"),
                },
                Ok(_) => Item::Unreadable {
                    line: number,
                    error: io::ErrorKind::UnexpectedEof.into(),
                },
                Err(error) => Item::Unreadable {
                    line: number,
                    error,
                },
            }
        } else {
            buf.clear();
            match (&mut reader).take(len).read_to_end(&mut buf) {
                Ok(n) if n as u64 == len => match decode_proto(&buf) {
                    Ok(request) => batch(request),
                    Err(reason) => Item::Malformed {
                        line: number,
                        reason,
                    },
                },
                Ok(_) => Item::Unreadable {
                    line: number,
                    error: io::ErrorKind::UnexpectedEof.into(),
                },
                Err(error) => Item::Unreadable {
                    line: number,
                    error,
                },
            }
        };
        let last = matches!(item, Item::Unreadable { .. });
        if tx.blocking_send(item).is_err() || last {
            return;
        }
    }
}

/// A varint, or None at a clean end of input. An end inside the varint is `UnexpectedEof`.
fn read_varint(reader: &mut dyn BufRead) -> io::Result<Option<u64>> {
    let mut value = 0u64;
    for i in 0..10 {
        let byte = match reader.fill_buf()?.first() {
            Some(b) => *b,
            None if i == 0 => return Ok(None),
            None => return Err(io::ErrorKind::UnexpectedEof.into()),
        };
        reader.consume(1);
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some(value));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "a message length longer than 10 bytes",
    ))
}

/// One decoded message as a batch of its valid spans.
fn batch(request: ExportTraceServiceRequest) -> Item {
    let mut resource_spans = request.resource_spans;
    let rejected = validate::retain_valid(&mut resource_spans);
    let start_unix_nano = resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .map(|s| s.start_time_unix_nano)
        .min();
    Item::Batch {
        traces: Traces::new(resource_spans),
        received: rejected.kept + rejected.spans,
        invalid: rejected.spans,
        start_unix_nano,
    }
}

/// What [`Lines::next`] found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Line<'a> {
    /// A line, without its newline.
    Text(&'a [u8]),
    /// A line longer than the limit; its bytes were skipped, not kept.
    TooLong,
}

/// Splits input into lines of at most `max` bytes, holding no more than that of any line.
pub(super) struct Lines {
    buf: Vec<u8>,
    max: usize,
    /// The current line passed the limit: its bytes are being skipped.
    too_long: bool,
    /// `buf` holds the line handed out last.
    handed_out: bool,
}

impl Lines {
    pub(super) fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            max,
            too_long: false,
            handed_out: false,
        }
    }

    /// The next complete line, or None at the end of the input for now. An unfinished last
    /// line stays here: a followed file may still complete it; see [`Lines::rest`].
    pub(super) fn next(&mut self, reader: &mut dyn BufRead) -> io::Result<Option<Line<'_>>> {
        if std::mem::take(&mut self.handed_out) {
            self.buf.clear();
        }
        loop {
            let available = match reader.fill_buf() {
                Ok(a) => a,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                return Ok(None);
            }
            let newline = available.iter().position(|b| *b == b'\n');
            let chunk = &available[..newline.unwrap_or(available.len())];
            if !self.too_long {
                if self.buf.len() + chunk.len() > self.max {
                    self.too_long = true;
                    self.buf = Vec::new();
                } else {
                    self.buf.extend_from_slice(chunk);
                }
            }
            let used = newline.map_or(available.len(), |i| i + 1);
            reader.consume(used);
            if newline.is_some() {
                return Ok(Some(self.finish_line()));
            }
        }
    }

    /// At the very end of the input: the last line, when it has no newline.
    pub(super) fn rest(&mut self) -> Option<Line<'_>> {
        if std::mem::take(&mut self.handed_out) {
            self.buf.clear();
        }
        (self.too_long || !self.buf.is_empty()).then(|| self.finish_line())
    }

    fn finish_line(&mut self) -> Line<'_> {
        if std::mem::take(&mut self.too_long) {
            Line::TooLong
        } else {
            self.handed_out = true;
            Line::Text(&self.buf)
        }
    }
}
