//! Span and resource attribute names that more than one component reads or writes, and the
//! helpers that read and write them. One component writing a name and another reading it is a
//! contract: holding the names here lets the compiler keep it.

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;

/// The resource attribute that names the service.
pub const SERVICE_NAME: &str = "service.name";

/// The service name used for resources without `service.name`, as the OpenTelemetry SDKs do.
pub const UNKNOWN_SERVICE: &str = "unknown_service";

/// The span attribute an anomaly filter (hstree) writes its score to, and the latency rules read
/// into a decision's evidence.
pub const ANOMALY_SCORE: &str = "tracescale.anomaly.score";

/// The span attribute set to `true` on spans an anomaly filter (hstree) judged anomalous.
pub const ANOMALY: &str = "tracescale.anomaly";

/// The string value of attribute `key`, if present and a string.
pub fn string_attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(any_value::Value::StringValue(s)) => Some(s.as_str()),
            _ => None,
        }
    })
}

/// The resource's `service.name`, or [`UNKNOWN_SERVICE`].
pub fn service_name(resource: Option<&Resource>) -> &str {
    resource
        .and_then(|r| string_attribute(&r.attributes, SERVICE_NAME))
        .unwrap_or(UNKNOWN_SERVICE)
}

/// The anomaly score an anomaly filter tagged the span with ([`ANOMALY_SCORE`]), if it is there
/// and a number.
pub fn anomaly_score(attributes: &[KeyValue]) -> Option<f64> {
    attributes
        .iter()
        .find(|kv| kv.key == ANOMALY_SCORE)
        .and_then(|kv| match kv.value {
            Some(AnyValue {
                value: Some(any_value::Value::DoubleValue(d)),
            }) => Some(d),
            _ => None,
        })
}

/// Sets `key` to `value`, replacing an earlier value rather than repeating the key (a span may
/// pass the same processor twice).
pub fn set_attribute(attributes: &mut Vec<KeyValue>, key: &str, value: any_value::Value) {
    let value = Some(AnyValue { value: Some(value) });
    match attributes.iter_mut().find(|kv| kv.key == key) {
        Some(kv) => kv.value = value,
        None => attributes.push(KeyValue {
            key: key.to_string(),
            value,
            ..Default::default()
        }),
    }
}
