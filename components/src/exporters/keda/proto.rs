//! KEDA's external scaler protocol (`externalscaler`), generated at build time from
//! `proto/externalscaler.proto`: the messages, the server the exporter implements and the
//! client tests and benches call it with.

#![allow(missing_docs, unreachable_pub, clippy::all)]

tonic::include_proto!("externalscaler");
