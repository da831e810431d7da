//! A bounded string interner, so that a span record carries 4-byte symbols instead of strings
//! and a flood of distinct names (a service name holding a request id, say) cannot grow memory
//! without limit.

use std::collections::HashMap;

/// An interned name. Symbols are dense and stable for the life of their [`Interner`], so a
/// caller can index a `Vec` by them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Symbol(pub u32);

impl Symbol {
    /// Every name that arrived after the interner was full; counted in [`Interner::overflowed`].
    pub const OTHER: Symbol = Symbol(0);
    /// "No symbol", for optional fields such as a CLIENT span's peer, without an `Option`
    /// that would widen the record.
    pub const NONE: Symbol = Symbol(u32::MAX);

    /// The symbol as a `Vec` index.
    pub fn index(self) -> usize {
        self.0 as usize
    }

    /// False for [`Symbol::NONE`].
    pub fn is_some(self) -> bool {
        self != Symbol::NONE
    }
}

/// The name [`Symbol::OTHER`] stands for.
pub const OTHER_NAME: &str = "_other";

/// Maps names to [`Symbol`]s, up to a fixed number of distinct names.
#[derive(Debug, Clone)]
pub struct Interner {
    map: HashMap<Box<str>, Symbol>,
    names: Vec<Box<str>>,
    max: usize,
    overflowed: u64,
}

impl Interner {
    /// An interner that keeps at most `max` distinct names besides [`OTHER_NAME`].
    pub fn new(max: usize) -> Self {
        let mut interner = Interner {
            map: HashMap::new(),
            names: Vec::new(),
            max: max.saturating_add(1),
            overflowed: 0,
        };
        interner.names.push(OTHER_NAME.into());
        interner.map.insert(OTHER_NAME.into(), Symbol::OTHER);
        interner
    }

    /// The symbol of `name`, adding it while there is room; [`Symbol::OTHER`] once full.
    pub fn intern(&mut self, name: &str) -> Symbol {
        if let Some(&symbol) = self.map.get(name) {
            return symbol;
        }
        if self.names.len() >= self.max {
            self.overflowed += 1;
            return Symbol::OTHER;
        }
        // Fewer than u32::MAX names by construction: `max` is a configured, small bound.
        let symbol = Symbol(u32::try_from(self.names.len()).unwrap_or(Symbol::OTHER.0));
        self.names.push(name.into());
        self.map.insert(name.into(), symbol);
        symbol
    }

    /// The symbol of `name` if it was interned, without adding it.
    pub fn get(&self, name: &str) -> Option<Symbol> {
        self.map.get(name).copied()
    }

    /// The name of `symbol`; [`OTHER_NAME`] for unknown symbols, so a stale symbol cannot panic.
    pub fn name(&self, symbol: Symbol) -> &str {
        self.names
            .get(symbol.index())
            .map_or(OTHER_NAME, |name| name)
    }

    /// Distinct names held, [`OTHER_NAME`] included.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Never true: [`OTHER_NAME`] is always held.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Names folded into [`Symbol::OTHER`] because the interner was full.
    pub fn overflowed(&self) -> u64 {
        self.overflowed
    }
}
