//! A rule's sliding window: its samples sorted by end time, and a running breach count.

use std::collections::VecDeque;

/// One matching span, as a window keeps it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Sample {
    pub(super) end: u64,
    pub(super) duration: u64,
    pub(super) trace_id: [u8; 16],
    /// NaN when the span was not tagged (or did not breach: only breaches are looked at).
    pub(super) score: f32,
}

/// How far an out-of-order sample is walked back before the window is bisected instead.
pub(super) const SHORT_WALK: usize = 16;

/// A rule's samples, sorted by end time, at most `cap` of them.
#[derive(Debug)]
pub(super) struct Window {
    pub(super) samples: VecDeque<Sample>,
    pub(super) breaches: usize,
    pub(super) cap: usize,
}

impl Window {
    pub(super) fn new(cap: usize) -> Self {
        Self {
            samples: VecDeque::new(),
            breaches: 0,
            cap,
        }
    }

    /// Inserts in end-time order; returns true when a sample was evicted (or refused) because
    /// the window was full.
    pub(super) fn insert(&mut self, sample: Sample, above: u64) -> bool {
        let mut evicted = false;
        if self.samples.len() >= self.cap {
            evicted = true;
            match self.samples.front() {
                // Older than everything kept: it would be the next one out anyway.
                Some(front) if sample.end < front.end => return true,
                _ => self.pop_front(above),
            }
        }
        if self.samples.len() == self.samples.capacity() {
            // Grow by doubling but never past the cap, so a full window holds exactly `cap`.
            let want = (self.samples.len().max(8) * 2).min(self.cap);
            self.samples
                .reserve_exact(want.saturating_sub(self.samples.len()));
        }
        if sample.duration > above {
            self.breaches += 1;
        }
        match self.samples.back() {
            Some(back) if sample.end < back.end => {
                // Out of order (a late or reordered span): keep the ring sorted so that expiry
                // from the front stays exact. Spans are usually only a little out of order, so
                // walk back a few samples (cache-friendly) before bisecting.
                let mut at = self.samples.len() - 1;
                let mut steps = 0;
                while at > 0 && self.samples[at - 1].end > sample.end {
                    if steps == SHORT_WALK {
                        at = self.samples.partition_point(|s| s.end <= sample.end);
                        break;
                    }
                    at -= 1;
                    steps += 1;
                }
                self.samples.insert(at, sample);
            }
            _ => self.samples.push_back(sample),
        }
        evicted
    }

    pub(super) fn pop_front(&mut self, above: u64) {
        if let Some(s) = self.samples.pop_front()
            && s.duration > above
        {
            self.breaches -= 1;
        }
    }

    /// Drops samples that ended at or before `cutoff`.
    pub(super) fn expire(&mut self, cutoff: u64, above: u64) {
        while self.samples.front().is_some_and(|s| s.end <= cutoff) {
            self.pop_front(above);
        }
    }

    pub(super) fn len(&self) -> usize {
        self.samples.len()
    }
}
