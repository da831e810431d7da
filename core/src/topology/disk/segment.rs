//! The on-disk form of a disk buffer: numbered segment files of checksummed records, and an
//! acknowledgement file that says how far the exporter has got.
//!
//! ```text
//! 00000000000000000007.seg   record record record …      (read, partly acknowledged)
//! 00000000000000000008.seg   record record …             (being written)
//! ack                        segment 7, offset 41 272, crc32
//! record = len: u32 LE · crc32(kind · payload): u32 LE · kind: u8 · payload
//! ```
//!
//! Segments are only ever appended to, and only by the process that created them: a restart
//! starts a new one, so a torn tail (a crash mid-write) is found once, by the reader, at the
//! end of an old segment. Records are whole signals: traces as an OTLP
//! `ExportTraceServiceRequest`, decisions as JSON.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use crate::signal::{Decision, Signal, Traces};

/// Bytes before a record's payload: length, checksum, kind.
pub(super) const HEADER: u64 = 9;

const TRACES: u8 = 0;
const DECISIONS: u8 = 1;

/// Why a buffer directory or a record could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SegmentError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// Another buffer, in this process or another, holds the directory.
    #[error(
        "{path}: in use by another disk buffer (each exporter, and each running tracescale, needs a directory of its own)"
    )]
    Locked {
        /// The directory.
        path: PathBuf,
    },
    /// A record's checksum does not match, or its length runs past the end of its segment.
    #[error("{path}: corrupt or truncated record at byte {offset}")]
    Corrupt {
        /// The segment.
        path: PathBuf,
        /// Where the bad record starts.
        offset: u64,
    },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> SegmentError + '_ {
    move |source| SegmentError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The file of segment `seq` in `dir`. Zero-padded, so that names sort as numbers do.
pub(super) fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.seg"))
}

/// The segments in `dir`, oldest first, with their sizes.
pub(super) fn list_segments(dir: &Path) -> Result<Vec<(u64, u64)>, SegmentError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_at(dir))? {
        let entry = entry.map_err(io_at(dir))?;
        let name = entry.file_name();
        let Some(seq) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".seg"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let len = entry.metadata().map_err(io_at(&entry.path()))?.len();
        found.push((seq, len));
    }
    found.sort_unstable();
    Ok(found)
}

/// Encodes a signal as one record: header and payload.
pub(super) fn encode(signal: &Signal) -> Vec<u8> {
    // The payload is encoded in place behind a header filled in afterwards: no copy of the
    // spans, and no second copy of the bytes.
    let mut record = vec![0u8; HEADER as usize];
    let kind = match signal {
        Signal::Traces(traces) => {
            // Field 1 of `ExportTraceServiceRequest`, once per `ResourceSpans`: the same bytes
            // as encoding the request, without building one.
            for resource_spans in &traces.resource_spans {
                prost::encoding::message::encode(1, resource_spans, &mut record);
            }
            TRACES
        }
        Signal::Decisions(decisions) => {
            // Decisions are plain data with derived serde: serialising them cannot fail.
            let _ = serde_json::to_writer(&mut record, decisions);
            DECISIONS
        }
    };
    record[8] = kind;
    let len = (record.len() - HEADER as usize) as u32;
    let crc = crc32fast::hash(&record[8..]);
    record[..4].copy_from_slice(&len.to_le_bytes());
    record[4..8].copy_from_slice(&crc.to_le_bytes());
    record
}

fn decode(kind: u8, payload: &[u8]) -> Option<Signal> {
    match kind {
        TRACES => ExportTraceServiceRequest::decode(payload)
            .ok()
            .map(|r| Signal::Traces(Traces::new(r.resource_spans))),
        DECISIONS => serde_json::from_slice::<Vec<Decision>>(payload)
            .ok()
            .map(Signal::Decisions),
        _ => None,
    }
}

/// Appends records to one segment file.
pub(super) struct SegmentWriter {
    pub(super) seq: u64,
    path: PathBuf,
    file: File,
    /// Bytes written and synced: a failed write is cut back to here.
    pub(super) synced: u64,
    /// Bytes written, synced or not.
    pub(super) written: u64,
}

impl SegmentWriter {
    /// Creates segment `seq`, and syncs the directory so that the new name survives a crash.
    pub(super) fn create(dir: &Path, seq: u64) -> Result<Self, SegmentError> {
        let path = segment_path(dir, seq);
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(io_at(&path))?;
        sync_dir(dir)?;
        Ok(Self {
            seq,
            path,
            file,
            synced: 0,
            written: 0,
        })
    }

    /// Appends one encoded record.
    pub(super) fn append(&mut self, record: &[u8]) -> Result<(), SegmentError> {
        match self.file.write_all(record) {
            Ok(()) => {
                self.written += record.len() as u64;
                Ok(())
            }
            Err(source) => Err(self.failed(source)),
        }
    }

    /// Makes everything appended durable.
    pub(super) fn sync(&mut self) -> Result<(), SegmentError> {
        if self.synced == self.written {
            return Ok(());
        }
        match self.file.sync_data() {
            Ok(()) => {
                self.synced = self.written;
                Ok(())
            }
            Err(source) => Err(self.failed(source)),
        }
    }

    /// A write or a sync failed: cut back what was not synced, and say where.
    fn failed(&mut self, source: io::Error) -> SegmentError {
        self.rewind();
        SegmentError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Cuts off what was not synced (a write that failed half-way, on a full disk), so that the
    /// next append follows a whole record. The records cut off are still in memory and are
    /// written again.
    fn rewind(&mut self) {
        if self.file.set_len(self.synced).is_ok() {
            self.written = self.synced;
        }
    }
}

fn sync_dir(dir: &Path) -> Result<(), SegmentError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at(dir))
}

/// What the reader found next in a segment.
pub(super) enum Next {
    /// A record, and the offset just past it.
    Record(Signal, u64),
    /// Nothing more up to the limit.
    End,
}

/// Reads records of one segment from an offset, up to a limit the writer has made durable.
pub(super) struct SegmentReader {
    pub(super) seq: u64,
    path: PathBuf,
    file: BufReader<File>,
    pub(super) offset: u64,
}

impl SegmentReader {
    /// Opens segment `seq` at `offset`.
    pub(super) fn open(dir: &Path, seq: u64, offset: u64) -> Result<Self, SegmentError> {
        let path = segment_path(dir, seq);
        let mut file = File::open(&path).map_err(io_at(&path))?;
        file.seek(SeekFrom::Start(offset)).map_err(io_at(&path))?;
        Ok(Self {
            seq,
            path,
            file: BufReader::with_capacity(1 << 16, file),
            offset,
        })
    }

    /// The next record that ends at or before `limit`. A record that runs past `limit`, or whose
    /// checksum or contents are wrong, is [`SegmentError::Corrupt`].
    pub(super) fn next(&mut self, limit: u64) -> Result<Next, SegmentError> {
        if self.offset >= limit {
            return Ok(Next::End);
        }
        let corrupt = || SegmentError::Corrupt {
            path: self.path.clone(),
            offset: self.offset,
        };
        if limit - self.offset < HEADER {
            return Err(corrupt());
        }
        let mut header = [0u8; HEADER as usize];
        self.file
            .read_exact(&mut header)
            .map_err(io_at(&self.path))?;
        let len = u64::from(u32::from_le_bytes([
            header[0], header[1], header[2], header[3],
        ]));
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let kind = header[8];
        let end = self.offset + HEADER + len;
        // Checked before allocating: a corrupt length must not ask for gigabytes.
        if end > limit {
            return Err(corrupt());
        }
        let mut payload = vec![0u8; len as usize];
        self.file
            .read_exact(&mut payload)
            .map_err(io_at(&self.path))?;
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&[kind]);
        hasher.update(&payload);
        if hasher.finalize() != crc {
            return Err(corrupt());
        }
        let signal = decode(kind, &payload).ok_or_else(corrupt)?;
        self.offset = end;
        Ok(Next::Record(signal, end))
    }
}

/// Where the exporter has got to: every record before `offset` of segment `seq` is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(super) struct Position {
    pub(super) seq: u64,
    pub(super) offset: u64,
}

/// The acknowledgement file. Rewritten in place and not synced: after a crash an older
/// position only means some records are sent again (at least once), and a torn one fails its
/// checksum and counts as no position at all.
pub(super) struct AckFile {
    path: PathBuf,
    file: File,
}

impl AckFile {
    /// Opens or creates `dir/ack`, returning the position it holds.
    pub(super) fn open(dir: &Path) -> Result<(Self, Option<Position>), SegmentError> {
        let path = dir.join("ack");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_at(&path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io_at(&path))?;
        let position = (bytes.len() == 20)
            .then(|| {
                let word = |i: usize| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&bytes[i..i + 8]);
                    u64::from_le_bytes(b)
                };
                let crc = u32::from_le_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
                (crc32fast::hash(&bytes[..16]) == crc).then(|| Position {
                    seq: word(0),
                    offset: word(8),
                })
            })
            .flatten();
        Ok((Self { path, file }, position))
    }

    /// Records `position`.
    pub(super) fn store(&mut self, position: Position) -> Result<(), SegmentError> {
        let mut bytes = [0u8; 20];
        bytes[..8].copy_from_slice(&position.seq.to_le_bytes());
        bytes[8..16].copy_from_slice(&position.offset.to_le_bytes());
        let crc = crc32fast::hash(&bytes[..16]);
        bytes[16..].copy_from_slice(&crc.to_le_bytes());
        self.file
            .seek(SeekFrom::Start(0))
            .and_then(|_| self.file.write_all(&bytes))
            .map_err(io_at(&self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::Traces;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn traces(n: usize) -> Signal {
        Signal::Traces(Traces::new(vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: (0..n)
                    .map(|i| Span {
                        name: format!("span {i}"),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }]))
    }

    #[test]
    fn records_round_trip_and_a_flipped_byte_or_a_cut_tail_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SegmentWriter::create(dir.path(), 3).unwrap();
        for n in 1..=3 {
            w.append(&encode(&traces(n))).unwrap();
        }
        w.sync().unwrap();
        let end = w.written;
        let mut r = SegmentReader::open(dir.path(), 3, 0).unwrap();
        let mut counts = Vec::new();
        while let Next::Record(signal, _) = r.next(end).unwrap() {
            counts.push(signal.item_count());
        }
        assert_eq!(counts, [1, 2, 3]);

        // The last byte flipped: the first two records read, the third is corrupt.
        let path = segment_path(dir.path(), 3);
        let mut bytes = std::fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let mut r = SegmentReader::open(dir.path(), 3, 0).unwrap();
        assert!(matches!(r.next(end), Ok(Next::Record(..))));
        assert!(matches!(r.next(end), Ok(Next::Record(..))));
        assert!(matches!(r.next(end), Err(SegmentError::Corrupt { .. })));

        // Cut mid-record, as a crash mid-write leaves it.
        std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        let mut r = SegmentReader::open(dir.path(), 3, 0).unwrap();
        let cut = end - 5;
        assert!(matches!(r.next(cut), Ok(Next::Record(..))));
        assert!(matches!(r.next(cut), Ok(Next::Record(..))));
        assert!(matches!(r.next(cut), Err(SegmentError::Corrupt { .. })));
        assert_eq!(list_segments(dir.path()).unwrap(), [(3, cut)]);
    }

    #[test]
    fn the_ack_file_keeps_its_position_and_a_torn_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ack, none) = AckFile::open(dir.path()).unwrap();
        assert_eq!(none, None);
        let at = Position { seq: 7, offset: 41 };
        ack.store(at).unwrap();
        drop(ack);
        assert_eq!(AckFile::open(dir.path()).unwrap().1, Some(at));
        let path = dir.path().join("ack");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[3] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(AckFile::open(dir.path()).unwrap().1, None);
    }
}
