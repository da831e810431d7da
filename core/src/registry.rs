//! The component registry: every factory that any linked crate submitted with
//! `inventory::submit!`.
//!
//! Nothing central lists components. A crate adds one by submitting a [`ComponentFactory`]; the
//! binary links the crate (`use tracescale_components as _;`) and the factory is here.

use crate::component::{BuildContext, ComponentKind, Exporter, Processor, Receiver};
use crate::config::BuildError;
use crate::signal::SignalKind;

/// Builds a receiver from its config table.
pub type BuildReceiver = fn(&BuildContext<'_>) -> Result<Box<dyn Receiver>, BuildError>;
/// Builds a processor from its config table.
pub type BuildProcessor = fn(&BuildContext<'_>) -> Result<Box<dyn Processor>, BuildError>;
/// Builds an exporter from its config table.
pub type BuildExporter = fn(&BuildContext<'_>) -> Result<Box<dyn Exporter>, BuildError>;

/// The build function of a factory, which also says what kind of component it builds.
#[derive(Clone, Copy)]
pub enum Build {
    /// Builds a receiver.
    Receiver(BuildReceiver),
    /// Builds a processor.
    Processor(BuildProcessor),
    /// Builds an exporter.
    Exporter(BuildExporter),
}

/// One registered component type.
///
/// ```no_run
/// use tracescale_core::registry::{Build, ComponentFactory};
/// use tracescale_core::signal::SignalKind;
/// # fn build(ctx: &tracescale_core::component::BuildContext<'_>)
/// #     -> Result<Box<dyn tracescale_core::component::Processor>, tracescale_core::config::BuildError> {
/// #     Err(ctx.invalid("", "an example"))
/// # }
/// # #[derive(serde::Deserialize)] struct MyConfig {}
///
/// inventory::submit! {
///     ComponentFactory {
///         type_name: "my_filter",
///         description: "drops spans of health checks",
///         takes: &[SignalKind::Traces],
///         emits: &[SignalKind::Traces],
///         config_keys: tracescale_core::config::field_names::<MyConfig>,
///         build: Build::Processor(build),
///     }
/// }
/// ```
pub struct ComponentFactory {
    /// The `type` in config files: `otlp`, `hstree`.
    pub type_name: &'static str,
    /// One line for `tracescale components`.
    pub description: &'static str,
    /// Signals the component consumes (empty for receivers).
    pub takes: &'static [SignalKind],
    /// Signals the component produces (empty for exporters).
    pub emits: &'static [SignalKind],
    /// The top-level keys of the component's config table.
    pub config_keys: fn() -> &'static [&'static str],
    /// The constructor.
    pub build: Build,
}

impl ComponentFactory {
    /// Receiver, processor or exporter.
    pub fn kind(&self) -> ComponentKind {
        match self.build {
            Build::Receiver(_) => ComponentKind::Receiver,
            Build::Processor(_) => ComponentKind::Processor,
            Build::Exporter(_) => ComponentKind::Exporter,
        }
    }

    /// True when the component consumes `signal`.
    pub fn takes(&self, signal: SignalKind) -> bool {
        self.takes.contains(&signal)
    }

    /// True when the component produces `signal`.
    pub fn emits(&self, signal: SignalKind) -> bool {
        self.emits.contains(&signal)
    }
}

impl std::fmt::Debug for ComponentFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentFactory")
            .field("kind", &self.kind())
            .field("type_name", &self.type_name)
            .field("takes", &self.takes)
            .field("emits", &self.emits)
            .finish_non_exhaustive()
    }
}

inventory::collect!(ComponentFactory);

/// Every registered factory, sorted by kind then type.
pub fn all() -> Vec<&'static ComponentFactory> {
    let mut all: Vec<_> = inventory::iter::<ComponentFactory>.into_iter().collect();
    all.sort_by_key(|f| (f.kind(), f.type_name));
    all
}

/// The factory for a kind and type, if one is registered.
pub fn lookup(kind: ComponentKind, type_name: &str) -> Option<&'static ComponentFactory> {
    inventory::iter::<ComponentFactory>
        .into_iter()
        .find(|f| f.kind() == kind && f.type_name == type_name)
}

/// The registered types of one kind, sorted.
pub fn types(kind: ComponentKind) -> Vec<&'static str> {
    all()
        .into_iter()
        .filter(|f| f.kind() == kind)
        .map(|f| f.type_name)
        .collect()
}

/// Kind and type pairs registered more than once: two crates claiming one name.
pub fn duplicates() -> Vec<(ComponentKind, &'static str)> {
    let all = all();
    let mut dups: Vec<_> = all
        .windows(2)
        .filter(|w| w[0].kind() == w[1].kind() && w[0].type_name == w[1].type_name)
        .map(|w| (w[0].kind(), w[0].type_name))
        .collect();
    dups.dedup();
    dups
}
