//! What a processor sees of the batches its pipeline had no room for.

use crate::signal::Signal;

/// A synchronous look at the batches receivers refused because a pipeline was full or the
/// process was over its memory limit.
///
/// Refusing is how the engine sheds load: the client is told to back off and the batch is not
/// queued. Some processors must not go blind when that happens. The latency rules are the
/// reason an overload gets noticed at all, so they keep counting what was refused. A processor
/// offers a tap through [`Processor::tap`](super::Processor::tap). The receiver calls it on
/// its own task, with the batch as it arrived, before any processor of the pipeline saw it.
///
/// A tap runs on the receiver's request path while the engine is overloaded, so it must be
/// cheap and must never wait on I/O. It sees only refused batches; the ones that were queued
/// reach [`Processor::process`](super::Processor::process) as usual. A client that retries
/// sends a refused batch again, so a tap that counts must tell repeats apart.
pub trait Tap: Send + Sync {
    /// Looks at a batch that was refused. It is not queued anywhere.
    fn refused(&self, signal: &Signal);
}
