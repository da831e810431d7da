//! Built-in processors.

pub mod hstree;
pub mod latency_rules;
pub mod probabilistic_sampler;
pub mod slo_scaler;

use tracescale_core::component::Emitter;
use tracescale_core::signal::{Decision, Signal};

/// Logs each decision at INFO (a decision is rare and is what an operator looks for) and emits
/// them as one batch; nothing when there are none.
pub(crate) fn emit_decisions(component: &str, decisions: Vec<Decision>, out: &mut Emitter) {
    if decisions.is_empty() {
        return;
    }
    for d in &decisions {
        tracing::info!(
            component,
            rule = %d.rule,
            target = %d.target,
            change = %d.change,
            reason = %d.reason,
            "scale decision"
        );
    }
    out.emit(Signal::Decisions(decisions));
}
