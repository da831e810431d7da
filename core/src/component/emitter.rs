use crate::signal::Signal;

/// Where a processor puts what it emits.
///
/// Emitting only buffers; the engine sends the buffer downstream after the call returns, waiting
/// for room in the next bounded queue. That keeps processors free of channel handling and makes
/// them easy to test: build an `Emitter`, call the processor, read [`Emitter::take`].
#[derive(Debug, Default)]
pub struct Emitter {
    buf: Vec<Signal>,
}

impl Emitter {
    /// An empty emitter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Emits one batch downstream. Empty batches are dropped here.
    pub fn emit(&mut self, signal: impl Into<Signal>) {
        let signal = signal.into();
        if signal.item_count() > 0 {
            self.buf.push(signal);
        }
    }

    /// Takes everything emitted so far.
    pub fn take(&mut self) -> Vec<Signal> {
        std::mem::take(&mut self.buf)
    }

    /// Moves everything emitted so far out, keeping the buffer's allocation for the next call.
    pub fn drain(&mut self) -> std::vec::Drain<'_, Signal> {
        self.buf.drain(..)
    }

    /// True when nothing is waiting to be sent.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}
