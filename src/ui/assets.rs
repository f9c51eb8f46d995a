//! The page's files, compiled into the binary (`include_str!`): one HTML page, one script and
//! one stylesheet, written for tracerd (no third-party code, no CDN, no web fonts), so the
//! view works offline and `cargo build` alone builds it.

use axum::body::Body;
use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::Response;

/// The page.
pub const INDEX_HTML: &str = include_str!("assets/index.html");
/// The script.
pub const APP_JS: &str = include_str!("assets/app.js");
/// The stylesheet.
pub const STYLE_CSS: &str = include_str!("assets/style.css");

/// Every asset: name, content type, text.
pub const FILES: &[(&str, &str, &str)] = &[
    ("index.html", "text/html; charset=utf-8", INDEX_HTML),
    ("app.js", "text/javascript; charset=utf-8", APP_JS),
    ("style.css", "text/css; charset=utf-8", STYLE_CSS),
];

/// Bytes of the page with its script and stylesheet (the page weight).
pub fn page_weight() -> usize {
    FILES.iter().map(|(_, _, t)| t.len()).sum()
}

fn serve(content_type: &str, text: &'static str) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-content-type-options", "nosniff")
        .header(
            "content-security-policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
             connect-src 'self'; frame-ancestors 'none'",
        )
        .body(Body::from(text))
        .unwrap_or_default()
}

pub(super) async fn index() -> Response {
    serve(FILES[0].1, INDEX_HTML)
}

pub(super) async fn file(Path(name): Path<String>) -> Response {
    match FILES.iter().find(|(n, _, _)| *n == name) {
        Some((_, ct, text)) => serve(ct, text),
        None => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Body::from(format!(
                "No such file in the live view: {name:?}\n"
            )))
            .unwrap_or_default(),
    }
}
