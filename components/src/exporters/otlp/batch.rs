//! Spans waiting to be sent, and cutting them into requests of at most `n` spans. Plain
//! synchronous code.
//!
//! A cut that falls inside a `ResourceSpans` or `ScopeSpans` copies the resource and the scope
//! (with their schema URLs) to both sides, so every span keeps the attributes it arrived with.

use std::collections::VecDeque;

use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};

/// Spans in arrival order, grouped as they arrived.
#[derive(Debug, Default)]
pub(super) struct Pending {
    groups: VecDeque<ResourceSpans>,
    spans: usize,
}

impl Pending {
    /// An empty buffer.
    pub(super) fn new() -> Self {
        Self::default()
    }

    /// Spans held.
    pub(super) fn len(&self) -> usize {
        self.spans
    }

    /// True when no span is held.
    pub(super) fn is_empty(&self) -> bool {
        self.spans == 0
    }

    /// Adds a batch at the end. Scopes and resources without spans are left out: they carry
    /// nothing to send.
    pub(super) fn push(&mut self, resource_spans: Vec<ResourceSpans>) {
        for mut rs in resource_spans {
            rs.scope_spans.retain(|ss| !ss.spans.is_empty());
            let n: usize = rs.scope_spans.iter().map(|ss| ss.spans.len()).sum();
            if n > 0 {
                self.spans += n;
                self.groups.push_back(rs);
            }
        }
    }

    /// Removes and returns up to `max` spans from the front, and how many that is.
    pub(super) fn take(&mut self, max: usize) -> (Vec<ResourceSpans>, usize) {
        let mut out = Vec::new();
        let mut taken = 0;
        while taken < max {
            let Some(mut rs) = self.groups.pop_front() else {
                break;
            };
            let n = count(&rs);
            if taken + n <= max {
                taken += n;
                out.push(rs);
                continue;
            }
            let head = split_resource(&mut rs, max - taken);
            taken += count(&head);
            out.push(head);
            self.groups.push_front(rs);
        }
        self.spans -= taken;
        (out, taken)
    }
}

fn count(rs: &ResourceSpans) -> usize {
    rs.scope_spans.iter().map(|ss| ss.spans.len()).sum()
}

/// Moves the first `n` spans of `rs` (which holds more) into a new `ResourceSpans` with the same
/// resource.
fn split_resource(rs: &mut ResourceSpans, n: usize) -> ResourceSpans {
    let mut head = ResourceSpans {
        resource: rs.resource.clone(),
        schema_url: rs.schema_url.clone(),
        scope_spans: Vec::new(),
    };
    let mut left = n;
    // Whole scopes first, then part of the one the cut falls in.
    let whole = rs
        .scope_spans
        .iter()
        .take_while(|ss| {
            let fits = ss.spans.len() <= left;
            if fits {
                left -= ss.spans.len();
            }
            fits
        })
        .count();
    head.scope_spans.extend(rs.scope_spans.drain(..whole));
    if left > 0
        && let Some(ss) = rs.scope_spans.first_mut()
    {
        head.scope_spans.push(split_scope(ss, left));
    }
    head
}

/// Moves the first `n` spans of `ss` into a new `ScopeSpans` with the same scope.
fn split_scope(ss: &mut ScopeSpans, n: usize) -> ScopeSpans {
    let rest = ss.spans.split_off(n);
    ScopeSpans {
        scope: ss.scope.clone(),
        schema_url: ss.schema_url.clone(),
        spans: std::mem::replace(&mut ss.spans, rest),
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::Span;
    use proptest::prelude::*;

    use super::*;

    fn attr(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.to_string(),
            value: Some(AnyValue {
                value: Some(
                    opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                        value.to_string(),
                    ),
                ),
            }),
            ..Default::default()
        }
    }

    /// `shape[r][s]` spans in scope `s` of resource `r`; span names say where they came from.
    fn batch(shape: &[Vec<usize>]) -> Vec<ResourceSpans> {
        shape
            .iter()
            .enumerate()
            .map(|(r, scopes)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![attr("service.name", &format!("svc{r}"))],
                    ..Default::default()
                }),
                schema_url: format!("resource-schema-{r}"),
                scope_spans: scopes
                    .iter()
                    .enumerate()
                    .map(|(s, &n)| ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: format!("scope{r}.{s}"),
                            ..Default::default()
                        }),
                        schema_url: format!("scope-schema-{r}.{s}"),
                        spans: (0..n)
                            .map(|i| Span {
                                name: format!("{r}.{s}.{i}"),
                                ..Default::default()
                            })
                            .collect(),
                    })
                    .collect(),
            })
            .collect()
    }

    /// Every span with the resource and scope it sits under, in order.
    fn flatten(groups: &[ResourceSpans]) -> Vec<(String, String, String, String, String)> {
        let mut out = Vec::new();
        for rs in groups {
            for ss in &rs.scope_spans {
                for span in &ss.spans {
                    out.push((
                        format!("{:?}", rs.resource),
                        rs.schema_url.clone(),
                        format!("{:?}", ss.scope),
                        ss.schema_url.clone(),
                        span.name.clone(),
                    ));
                }
            }
        }
        out
    }

    #[test]
    fn a_cut_inside_a_scope_keeps_resource_and_scope_on_both_sides() {
        let mut p = Pending::new();
        p.push(batch(&[vec![3, 4]]));
        let (first, n) = p.take(5);
        assert_eq!(n, 5);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].scope_spans.len(), 2);
        assert_eq!(first[0].scope_spans[1].spans.len(), 2);
        let (second, n) = p.take(5);
        assert_eq!(n, 2);
        assert_eq!(second[0].schema_url, "resource-schema-0");
        assert_eq!(second[0].scope_spans[0].schema_url, "scope-schema-0.1");
        assert_eq!(
            second[0].scope_spans[0]
                .scope
                .as_ref()
                .map(|s| s.name.as_str()),
            Some("scope0.1")
        );
        assert_eq!(second[0].scope_spans[0].spans[0].name, "0.1.2");
        assert!(p.is_empty());
    }

    #[test]
    fn empty_scopes_and_resources_are_left_out() {
        let mut p = Pending::new();
        p.push(batch(&[vec![0, 2], vec![], vec![0]]));
        assert_eq!(p.len(), 2);
        let (groups, n) = p.take(10);
        assert_eq!(n, 2);
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].scope_spans.len(), 1);
    }

    proptest! {
        #[test]
        fn cutting_conserves_spans_order_and_grouping(
            shape in prop::collection::vec(prop::collection::vec(0usize..6, 0..4), 0..5),
            max in 1usize..9,
        ) {
            let original = batch(&shape);
            let mut p = Pending::new();
            p.push(original.clone());
            let total = p.len();
            let mut out = Vec::new();
            let mut seen = 0;
            while !p.is_empty() {
                let (groups, n) = p.take(max);
                prop_assert!(n >= 1 && n <= max);
                prop_assert_eq!(n, flatten(&groups).len());
                // Only the last cut may be short.
                prop_assert!(n == max || p.is_empty());
                seen += n;
                out.extend(groups);
            }
            prop_assert_eq!(seen, total);
            prop_assert_eq!(p.len(), 0);
            prop_assert_eq!(flatten(&out), flatten(&original));
        }
    }
}
