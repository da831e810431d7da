//! Tests of the `slo_scaler` processor.
