//! Request bodies: inflating them within a limit and decoding them. Plain code, no I/O beyond
//! the in-memory decoders, so the fuzz targets and property tests run the receiver's own path.

use std::io::Read;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

/// Why a body could not be inflated.
#[derive(Debug)]
pub enum Decompress {
    /// A `Content-Encoding` the receiver does not take.
    Unsupported(String),
    /// Inflating would pass the limit.
    TooLarge,
    /// The compressed stream is broken.
    Corrupt(std::io::Error),
}

/// Inflates at most `limit` bytes: reading one byte more proves the body is larger.
pub fn decompress(encoding: Option<&str>, raw: Bytes, limit: usize) -> Result<Bytes, Decompress> {
    let reader: Box<dyn Read> = match encoding {
        None | Some("identity") | Some("") => {
            return if raw.len() > limit {
                Err(Decompress::TooLarge)
            } else {
                Ok(raw)
            };
        }
        Some("gzip") => Box::new(flate2::read::GzDecoder::new(std::io::Cursor::new(raw))),
        Some("zstd") => Box::new(
            zstd::stream::read::Decoder::new(std::io::Cursor::new(raw))
                .map_err(Decompress::Corrupt)?,
        ),
        Some(other) => return Err(Decompress::Unsupported(other.to_string())),
    };
    let mut out = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(Decompress::Corrupt)?;
    if out.len() > limit {
        return Err(Decompress::TooLarge);
    }
    Ok(Bytes::from(out))
}

/// What the HTTP receiver does with a body before validation: inflate it within `limit`, then
/// decode OTLP protobuf or OTLP/JSON. Every failure is an `Err` with the client's message.
pub fn decode_request(
    content_encoding: Option<&str>,
    body: Bytes,
    limit: usize,
    json: bool,
) -> Result<ExportTraceServiceRequest, String> {
    let bytes = decompress(content_encoding, body, limit).map_err(|e| match e {
        Decompress::Unsupported(enc) => format!("unsupported Content-Encoding {enc:?}"),
        Decompress::TooLarge => format!("the body inflates past {limit} bytes"),
        Decompress::Corrupt(err) => format!("cannot decompress the body: {err}"),
    })?;
    if json {
        decode_json(&bytes)
    } else {
        decode_proto(&bytes)
    }
}

/// Decodes one OTLP/JSON `ExportTraceServiceRequest` (a `TracesData` has the same shape):
/// lowerCamelCase keys, hex ids, 64-bit integers as strings or numbers.
pub fn decode_json(bytes: &[u8]) -> Result<ExportTraceServiceRequest, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("malformed OTLP/JSON: {e}"))
}

/// Decodes one OTLP protobuf `ExportTraceServiceRequest`.
pub fn decode_proto(bytes: &[u8]) -> Result<ExportTraceServiceRequest, String> {
    ExportTraceServiceRequest::decode(bytes).map_err(|e| format!("malformed protobuf: {e}"))
}

/// The fuzz targets' and regression tests' check of one body: decode it as the HTTP receiver
/// does, keep the valid spans, and assert what the receiver relies on. Panics on a violation.
pub fn check_body(content_encoding: Option<&str>, body: &[u8], json: bool) {
    const LIMIT: usize = 1 << 20;
    let Ok(mut request) =
        decode_request(content_encoding, Bytes::copy_from_slice(body), LIMIT, json)
    else {
        return;
    };
    let before: usize = request
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len())
        .sum();
    let rejected = super::validate::retain_valid(&mut request.resource_spans);
    assert_eq!(
        rejected.kept + rejected.spans,
        before,
        "every span is kept or rejected"
    );
    for span in request
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
    {
        assert_eq!(super::validate::check(span), Ok(()), "a kept span is valid");
    }
}
