//! The page: hand-written HTML, CSS and ES-module JavaScript in `assets/`, embedded in the
//! binary (no build step, no network at build time).

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

#[derive(rust_embed::Embed)]
#[folder = "assets/"]
struct Assets;

fn content_type(file: &str) -> &'static str {
    match file.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

/// The embedded `file`, or 404.
pub fn response(file: &str) -> Response {
    match Assets::get(file) {
        Some(asset) => (
            [(header::CONTENT_TYPE, content_type(file))],
            Body::from(asset.data.into_owned()),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, Body::empty()).into_response(),
    }
}
