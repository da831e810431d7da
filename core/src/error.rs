//! Errors for people: an error and its causes on one line.

use std::error::Error;

/// An error and its causes, joined with ": ". A cause whose text the line already holds (an
/// error that prints its source itself) is not repeated.
pub fn error_chain(err: &(dyn Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}
