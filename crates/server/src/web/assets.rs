//! Static assets of the web pages (CSS, our small script, vendored htmx and uPlot), embedded in
//! the binary and served under a content-hashed URL with a year-long immutable cache.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const ASSETS: [Asset; 4] = [
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../assets/app.css"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../assets/app.js"),
    },
    Asset {
        name: "htmx.min.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../assets/vendor/htmx.min.js"),
    },
    Asset {
        name: "uPlot.iife.min.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../assets/vendor/uPlot.iife.min.js"),
    },
];

/// uPlot's stylesheet is small: appended to ours so a page loads one CSS file.
const UPLOT_CSS: &[u8] = include_bytes!("../../assets/vendor/uPlot.min.css");

/// Bytes served for `name` (the CSS file carries uPlot's rules after ours).
fn body(asset: &Asset) -> &'static [u8] {
    static CSS: OnceLock<Vec<u8>> = OnceLock::new();
    if asset.name == "app.css" {
        CSS.get_or_init(|| [asset.bytes, b"\n", UPLOT_CSS].concat())
    } else {
        asset.bytes
    }
}

/// FNV-1a over the content: a version stamp for the URL, not a security measure.
fn version(bytes: &[u8]) -> String {
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{:012x}", h & 0xffff_ffff_ffff)
}

/// The URL of an asset, e.g. `/assets/3f2a…/app.css`; a changed file gets a new URL.
pub(crate) fn url(name: &str) -> String {
    static URLS: OnceLock<Vec<(&'static str, String)>> = OnceLock::new();
    let urls = URLS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| (a.name, format!("/assets/{}/{}", version(body(a)), a.name)))
            .collect()
    });
    urls.iter()
        .find(|(n, _)| *n == name)
        .map(|(_, u)| u.clone())
        .unwrap_or_default()
}

/// Every asset URL with its size in bytes (the page-weight test sums them).
pub fn all() -> Vec<(String, usize)> {
    ASSETS
        .iter()
        .map(|a| (url(a.name), body(a).len()))
        .collect()
}

/// `GET /assets/{version}/{name}`. An outdated version still gets the current file (a page
/// cached across an upgrade keeps working), but only the current one is cached for long.
pub(crate) async fn serve(Path((ver, name)): Path<(String, String)>) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    let bytes = body(asset);
    let cache = if ver == version(bytes) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut r = bytes.into_response();
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_carry_a_content_version_and_differ_per_file() {
        let all = all();
        assert_eq!(all.len(), ASSETS.len());
        for (u, len) in &all {
            assert!(
                u.starts_with("/assets/") && u.split('/').count() == 4,
                "{u}"
            );
            assert!(*len > 100, "{u} is suspiciously small");
        }
        assert_ne!(version(b"a"), version(b"b"));
        assert!(url("nope").is_empty());
    }
}
