//! Small pieces of text for people: counts with their nouns.

/// `n` and its noun, in the plural unless `n` is 1: `count(1, "span")` is "1 span",
/// `count(2, "replica")` is "2 replicas". For the regular nouns the engine's messages use.
pub fn count(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_is_singular_and_every_other_count_plural() {
        assert_eq!(count(1u32, "span"), "1 span");
        assert_eq!(count(0u32, "span"), "0 spans");
        assert_eq!(count(2u64, "replica"), "2 replicas");
    }
}
