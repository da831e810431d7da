//! The disk buffer in front of an exporter (`buffer = { type = "disk", … }`): what reaches the
//! exporter's queue is written to checksummed segment files and synced before the barriers
//! behind it are released, so a receiver that waits for them ([`Output::settle`]) answers OK
//! only for spans that would survive `kill -9`. The exporter reads from the files and
//! acknowledges what it has delivered; a restart replays the rest.
//!
//! ```text
//! fan-out ─ queue ─ writer task ─ segments ─ reader task ─ exporter
//!                   (group commit:           (export, flush, then
//!                    write, fsync,            acknowledge and delete
//!                    release barriers)        whole segments)
//! ```
//!
//! Bounded by `max_size`: past it the writer waits for the reader to free a segment, the queue
//! in front fills, and `when_full` decides as it does for a memory queue.
//!
//! [`Output::settle`]: super::output::Output::settle

mod segment;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tracing::{debug, info, warn};

use super::Stop;
use super::queue::{Item, QueueRx};
use super::stages::{LogLimiter, count_leftovers, export_one};
use crate::component::Exporter;
use crate::health::HealthHandle;
use crate::signal::SignalKind;
use crate::telemetry::ComponentTelemetry;
pub(crate) use segment::SegmentError;
use segment::{AckFile, Next, Position, SegmentReader, SegmentWriter, list_segments};

/// Records the writer commits at once, at most: one sync covers them all.
const GROUP_RECORDS: usize = 512;
/// Records the reader hands the exporter between two acknowledgements.
const READ_RECORDS: usize = 256;
/// How long a failed write (a full disk) waits before it is tried again.
const RETRY_WRITE: Duration = Duration::from_secs(1);

/// The reader's half of an opened buffer: where to resume, and where to record progress.
pub(super) struct Acknowledged {
    ack: AckFile,
    start: Position,
}

/// The file in a buffer directory whose exclusive lock marks the directory as in use.
const LOCK_FILE: &str = "lock";
/// How long opening waits for a directory held by a buffer that is still being dropped (a
/// pipeline that stopped a moment ago, in this process) before it gives up.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// The state shared by the writer and the reader of one buffer.
pub(super) struct DiskBuffer {
    dir: PathBuf,
    /// Held while the buffer lives: two writers in one directory would interleave segments
    /// and each delete what the other had not delivered. The system releases it when the
    /// process dies, however it dies.
    _lock: std::fs::File,
    max_size: u64,
    segment_size: u64,
    state: Mutex<State>,
    /// Signalled when the writer made more records durable, or finished.
    data: Notify,
    /// Signalled when the reader deleted a segment.
    space: Notify,
    component: String,
}

struct State {
    /// Every segment not yet deleted, oldest first, with its durable length.
    segments: VecDeque<(u64, u64)>,
    /// Their total size.
    bytes: u64,
    /// The segment the writer appends to, once it has made one.
    writing: Option<u64>,
    writer_done: bool,
}

impl DiskBuffer {
    /// Opens (creating it if needed) the buffer directory of one exporter, finding what an
    /// earlier run left there and where its exporter had got to. A directory another buffer
    /// holds is waited for a moment, then refused.
    pub(super) async fn open(
        component: &str,
        dir: &Path,
        max_size: u64,
    ) -> Result<(Self, Acknowledged), SegmentError> {
        let io = |source| SegmentError::Io {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))
            .map_err(io)?;
        let deadline = tokio::time::Instant::now() + LOCK_WAIT;
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock)
                    if tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(SegmentError::Locked {
                        path: dir.to_path_buf(),
                    });
                }
                Err(std::fs::TryLockError::Error(source)) => return Err(io(source)),
            }
        }
        let (ack, stored) = AckFile::open(dir)?;
        let segments: VecDeque<_> = list_segments(dir)?.into();
        let bytes = segments.iter().map(|(_, len)| len).sum();
        if bytes > 0 {
            info!(
                component,
                path = %dir.display(),
                bytes,
                segments = segments.len(),
                "the disk buffer holds data from an earlier run; it is sent first"
            );
        }
        describe();
        let buffer = Self {
            dir: dir.to_path_buf(),
            _lock: lock,
            max_size,
            // Small enough that the reader frees space well before `max_size` is reached.
            segment_size: (max_size / 16).clamp(1 << 20, 128 << 20),
            state: Mutex::new(State {
                segments,
                bytes,
                writing: None,
                writer_done: false,
            }),
            data: Notify::new(),
            space: Notify::new(),
            component: component.to_string(),
        };
        buffer.publish(bytes);
        let start = start_position(&buffer, stored);
        Ok((buffer, Acknowledged { ack, start }))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, bytes: u64) {
        let component = self.component.clone();
        metrics::gauge!("tracescale_buffer_bytes", "component" => component.clone())
            .set(bytes as f64);
        metrics::gauge!("tracescale_buffer_max_bytes", "component" => component)
            .set(self.max_size as f64);
    }

    fn next_seq(&self) -> u64 {
        self.state().segments.back().map_or(0, |(seq, _)| seq + 1)
    }

    /// Records the synced lengths of the segments the writer wrote to, and wakes the reader.
    fn grew(&self, touched: &[(u64, u64)]) {
        {
            let mut guard = self.state();
            let state = &mut *guard;
            for &(seq, synced) in touched {
                match state.segments.iter_mut().rev().find(|(s, _)| *s == seq) {
                    Some((_, len)) => {
                        let grown = synced.saturating_sub(*len);
                        *len = synced;
                        state.bytes += grown;
                    }
                    None => {
                        state.segments.push_back((seq, synced));
                        state.bytes += synced;
                    }
                }
                state.writing = Some(seq);
            }
            self.publish(state.bytes);
        }
        self.data.notify_one();
    }

    /// Waits until `bytes` more fit under `max_size`; an empty buffer takes anything, so that
    /// a record larger than the whole buffer still passes, alone.
    async fn room_for(&self, bytes: u64) {
        loop {
            let notified = self.space.notified();
            {
                let state = self.state();
                if state.bytes == 0 || state.bytes + bytes <= self.max_size {
                    return;
                }
            }
            notified.await;
        }
    }
}

/// Takes batches from the exporter's queue, writes them and syncs them, then releases the
/// barriers that came with them.
pub(super) async fn run_writer(
    buffer: Arc<DiskBuffer>,
    mut rx: QueueRx,
    telemetry: ComponentTelemetry,
    health: HealthHandle,
    stop: Arc<Stop>,
) {
    let mut writer: Option<SegmentWriter> = None;
    let mut seq = buffer.next_seq();
    let mut failing = LogLimiter::new();
    let mut failed = false;
    loop {
        let first = tokio::select! {
            biased;
            _ = stop.abort.cancelled() => break,
            item = rx.recv_item() => match item {
                Some(item) => item,
                None => break,
            },
        };
        let mut group = vec![first];
        while group.len() < GROUP_RECORDS {
            match rx.try_recv_item() {
                Ok(item) => group.push(item),
                Err(_) => break,
            }
        }
        let mut records = Vec::new();
        let mut counts = Vec::new();
        let mut barriers = Vec::new();
        for item in group {
            match item {
                Item::Batch(signal) => {
                    counts.push((signal.kind(), signal.item_count()));
                    records.push(segment::encode(&signal));
                }
                Item::Barrier(barrier) => barriers.push(barrier),
            }
        }
        let dropped = |telemetry: &ComponentTelemetry| {
            for &(kind, items) in &counts {
                telemetry.dropped(kind, "shutdown_deadline", items);
            }
        };
        let size: u64 = records.iter().map(|r| r.len() as u64).sum();
        tokio::select! {
            biased;
            _ = stop.abort.cancelled() => {
                dropped(&telemetry);
                break;
            }
            () = buffer.room_for(size) => {}
        }
        // Blocking file work off the runtime's threads; the writer moves there and back.
        let touched = loop {
            let dir = buffer.dir.clone();
            let segment_size = buffer.segment_size;
            let batch = std::mem::take(&mut records);
            let mut w = writer.take();
            let joined = tokio::task::spawn_blocking(move || {
                let result = write_group(&dir, &mut w, &mut seq, segment_size, &batch);
                (w, seq, batch, result)
            })
            .await;
            let Ok((w, next, batch, result)) = joined else {
                // The blocking task panicked: nothing can be written any more. The barriers go
                // with this task, and the queue in front fills.
                warn!(
                    component = telemetry.id(),
                    "the disk buffer's writer failed"
                );
                std::mem::forget(barriers);
                return;
            };
            writer = w;
            seq = next;
            records = batch;
            match result {
                Ok(touched) => break touched,
                Err(err) => {
                    failed = true;
                    health.not_ready(format!("disk buffer cannot write: {err}"));
                    if let Some(suppressed) = failing.ready() {
                        warn!(component = telemetry.id(), error = %err, suppressed, "the disk buffer cannot write; retrying");
                    }
                    tokio::select! {
                        biased;
                        _ = stop.abort.cancelled() => {
                            dropped(&telemetry);
                            std::mem::forget(barriers);
                            return;
                        }
                        () = tokio::time::sleep(RETRY_WRITE) => {}
                    }
                }
            }
        };
        if std::mem::take(&mut failed) {
            health.ready(None);
        }
        buffer.grew(&touched);
        // Durable: whoever waits on these may now answer OK.
        drop(barriers);
    }
    count_leftovers(&mut rx, &telemetry);
    buffer.state().writer_done = true;
    buffer.data.notify_one();
}

/// Appends `records` to the current segment (starting a new one when it is full) and syncs.
/// Returns each segment it wrote to, with its synced length.
fn write_group(
    dir: &Path,
    writer: &mut Option<SegmentWriter>,
    seq: &mut u64,
    segment_size: u64,
    records: &[Vec<u8>],
) -> Result<Vec<(u64, u64)>, SegmentError> {
    let mut touched = Vec::new();
    for record in records {
        let full = writer.as_ref().is_none_or(|w| w.written >= segment_size);
        if full {
            if let Some(w) = writer.as_mut() {
                w.sync()?;
                touched.push((w.seq, w.synced));
            }
            *writer = Some(SegmentWriter::create(dir, *seq)?);
            *seq += 1;
        }
        if let Some(w) = writer.as_mut() {
            w.append(record)?;
        }
    }
    if let Some(w) = writer.as_mut() {
        w.sync()?;
        touched.push((w.seq, w.synced));
    }
    Ok(touched)
}

/// Reads what the writer made durable and hands it to the exporter; once the exporter has
/// flushed, acknowledges it and deletes the segments it has finished.
pub(super) async fn run_reader(
    buffer: Arc<DiskBuffer>,
    acknowledged: Acknowledged,
    mut exporter: Box<dyn Exporter>,
    telemetry: ComponentTelemetry,
    takes: Arc<[SignalKind]>,
    stop: Arc<Stop>,
) {
    let mut limiter = LogLimiter::new();
    let Acknowledged { mut ack, start } = acknowledged;
    let mut position = start;
    let mut reader: Option<SegmentReader> = None;
    loop {
        let notified = buffer.data.notified();
        let (signals, next, done) = match read_group(&buffer, &mut reader, position).await {
            Ok(read) => read,
            Err(err) => {
                // Reported, counted, and the rest of that segment is skipped.
                warn!(component = telemetry.id(), error = %err, "the disk buffer found a corrupt or truncated record; skipping the rest of its segment");
                metrics::counter!("tracescale_buffer_corrupt_total", "component" => telemetry.id().to_string())
                    .increment(1);
                reader = None;
                position = Position {
                    seq: position.seq + 1,
                    offset: 0,
                };
                forget_before(&buffer, position);
                continue;
            }
        };
        if signals.is_empty() {
            if done {
                break;
            }
            tokio::select! {
                biased;
                _ = stop.abort.cancelled() => break,
                () = notified => continue,
            }
        }
        for signal in signals {
            if !takes.contains(&signal.kind()) {
                continue;
            }
            if !export_one(&mut *exporter, signal, &telemetry, &stop, &mut limiter).await {
                // Past the deadline: what is not acknowledged stays on disk for the next start.
                return finish(exporter, &telemetry, &stop).await;
            }
        }
        let flushed = tokio::select! {
            biased;
            _ = stop.abort.cancelled() => return finish(exporter, &telemetry, &stop).await,
            flushed = exporter.flush() => flushed,
        };
        if let Err(err) = flushed
            && let Some(suppressed) = limiter.ready()
        {
            warn!(component = telemetry.id(), error = %err, suppressed, "flush failed");
        }
        position = next;
        if let Err(err) = ack.store(position) {
            warn!(component = telemetry.id(), error = %err, "cannot record what was delivered; it may be sent again after a restart");
        }
        forget_before(&buffer, position);
        if buffer.state().writer_done {
            // Shutting down: what is still on disk stays there for the next start.
            debug!(
                component = telemetry.id(),
                "disk buffer: writer finished; reader stops"
            );
            break;
        }
    }
    finish(exporter, &telemetry, &stop).await;
}

/// Stops the exporter. Whatever it still held was never acknowledged to the buffer, so it is
/// still on disk for the next start: an exporter that gave it up at the deadline lost nothing,
/// and the shutdown is not made incomplete for it.
async fn finish(mut exporter: Box<dyn Exporter>, telemetry: &ComponentTelemetry, stop: &Stop) {
    let deadline = stop.deadline();
    match tokio::time::timeout_at(deadline, exporter.shutdown(deadline)).await {
        Ok(Ok(())) => debug!(component = telemetry.id(), "exporter stopped"),
        Ok(Err(err)) => info!(
            component = telemetry.id(),
            error = %err,
            "what the exporter could not send stays in the disk buffer for the next start"
        ),
        Err(_) => info!(
            component = telemetry.id(),
            "the exporter did not stop by the deadline; what it held stays in the disk buffer"
        ),
    }
}

/// Where to resume: the stored position if its segment still exists, else the oldest segment.
fn start_position(buffer: &DiskBuffer, stored: Option<Position>) -> Position {
    let state = buffer.state();
    let oldest = state.segments.front().map(|(seq, _)| *seq);
    match (stored, oldest) {
        (Some(p), Some(oldest)) if p.seq >= oldest => p,
        (_, Some(oldest)) => Position {
            seq: oldest,
            offset: 0,
        },
        (Some(p), None) => p,
        (None, None) => Position::default(),
    }
}

/// Up to [`READ_RECORDS`] durable records from `position` on, the position after them, and
/// whether the buffer is finished (the writer is done and nothing is left).
async fn read_group(
    buffer: &Arc<DiskBuffer>,
    reader: &mut Option<SegmentReader>,
    position: Position,
) -> Result<(Vec<crate::signal::Signal>, Position, bool), SegmentError> {
    // One look at the state: a segment other than `writing` is complete at the length seen
    // here, since the writer records a rotation and the old segment's final length together.
    let (segments, writing, done) = {
        let state = buffer.state();
        let segments: Vec<(u64, u64)> = state
            .segments
            .iter()
            .filter(|(seq, _)| *seq >= position.seq)
            .copied()
            .collect();
        (segments, state.writing, state.writer_done)
    };
    let dir = buffer.dir.clone();
    let mut r = reader.take();
    let joined = tokio::task::spawn_blocking(move || {
        let result = read_records(&dir, &mut r, position, &segments, writing);
        (r, result)
    })
    .await;
    let Ok((r, result)) = joined else {
        return Ok((Vec::new(), position, true));
    };
    *reader = r;
    let (signals, next) = result?;
    let finished = done && signals.is_empty() && buffer.state().bytes_after(next) == 0;
    Ok((signals, next, finished))
}

fn read_records(
    dir: &Path,
    reader: &mut Option<SegmentReader>,
    mut position: Position,
    segments: &[(u64, u64)],
    writing: Option<u64>,
) -> Result<(Vec<crate::signal::Signal>, Position), SegmentError> {
    let mut signals = Vec::new();
    for &(seq, durable) in segments {
        if seq > position.seq {
            position = Position { seq, offset: 0 };
            *reader = None;
        }
        if reader
            .as_ref()
            .is_none_or(|r| r.seq != seq || r.offset != position.offset)
        {
            *reader = Some(SegmentReader::open(dir, seq, position.offset)?);
        }
        let Some(r) = reader.as_mut() else { break };
        while signals.len() < READ_RECORDS {
            match r.next(durable) {
                Ok(Next::Record(signal, end)) => {
                    signals.push(signal);
                    position.offset = end;
                }
                Ok(Next::End) => break,
                // The good records before it go first; the next read meets the error alone.
                Err(_) if !signals.is_empty() => {
                    *reader = None;
                    return Ok((signals, position));
                }
                Err(err) => return Err(err),
            }
        }
        // Stop at the segment being written, or once the group is full.
        if signals.len() >= READ_RECORDS || Some(seq) == writing {
            break;
        }
        // A complete segment read to its end: move past it, so that it can be deleted.
        position = Position {
            seq: seq + 1,
            offset: 0,
        };
        *reader = None;
    }
    Ok((signals, position))
}

impl State {
    /// Durable bytes at or after `position`.
    fn bytes_after(&self, position: Position) -> u64 {
        self.segments
            .iter()
            .filter(|(seq, _)| *seq >= position.seq)
            .map(|&(seq, len)| {
                if seq == position.seq {
                    len.saturating_sub(position.offset)
                } else {
                    len
                }
            })
            .sum()
    }
}

/// Deletes the segments wholly before `position`, except the one being written.
fn forget_before(buffer: &DiskBuffer, position: Position) {
    let mut gone = Vec::new();
    {
        let mut state = buffer.state();
        while let Some(&(seq, len)) = state.segments.front() {
            if seq >= position.seq || Some(seq) == state.writing {
                break;
            }
            state.segments.pop_front();
            state.bytes -= len;
            gone.push(seq);
        }
        buffer.publish(state.bytes);
    }
    for seq in gone {
        let path = segment::segment_path(&buffer.dir, seq);
        if let Err(err) = std::fs::remove_file(&path) {
            warn!(path = %path.display(), error = %err, "cannot delete a finished disk buffer segment");
        }
    }
    buffer.space.notify_waiters();
}

fn describe() {
    crate::telemetry::describe(
        &[(
            "tracescale_buffer_corrupt_total",
            "Corrupt or truncated records a disk buffer found; the rest of each such segment is skipped.",
        )],
        &[
            (
                "tracescale_buffer_bytes",
                "Bytes in an exporter's disk buffer, written and not yet delivered.",
            ),
            (
                "tracescale_buffer_max_bytes",
                "The disk buffer's max_size: past it, the queue in front waits.",
            ),
        ],
        &[],
    );
}

#[cfg(test)]
mod tests;
