//! The engine's two clocks: the watermark of span end times and the wall clock handed in.

/// The two clocks, in nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Time {
    /// Latest end time of an accepted span.
    pub(super) watermark: u64,
    /// The engine's wall clock, as handed in.
    pub(super) wall: u64,
    pub(super) allowed_lateness: u64,
    /// `EngineSettings::event_clock`.
    pub(super) event_only: bool,
}

impl Time {
    /// The event clock: the watermark, never behind the wall clock minus the lateness.
    pub(super) fn clock(&self) -> u64 {
        if self.event_only {
            return self.watermark;
        }
        self.watermark
            .max(self.wall.saturating_sub(self.allowed_lateness))
    }
}
