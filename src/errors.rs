//! Error reporting helpers shared by every layer: [`error_chain`] renders an error and its
//! sources on one line for logs. A leaf module: it imports nothing from the crate.

/// `error: cause: cause`, for one-line logs.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
