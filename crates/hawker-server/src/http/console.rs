//! The web console under `/console/`: the viewer, host, agency and brand pages of
//! `console/` (repo root), compiled into the binary so `hawker serve` needs
//! neither the source tree nor the internet (docs/console.md).

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use super::error::ApiError;
use crate::config::Environment;

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $content_type:literal) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../console/", $name)),
        }
    };
}

const HTML: &str = "text/html; charset=utf-8";

static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("viewer.html", "text/html; charset=utf-8"),
    asset!("host.html", "text/html; charset=utf-8"),
    asset!("planner.html", "text/html; charset=utf-8"),
    asset!("brand.html", "text/html; charset=utf-8"),
    asset!("live.html", "text/html; charset=utf-8"),
    asset!("orders.html", "text/html; charset=utf-8"),
    asset!("console.css", "text/css; charset=utf-8"),
    asset!("common.js", "text/javascript; charset=utf-8"),
    asset!("viewer.js", "text/javascript; charset=utf-8"),
    asset!("host.js", "text/javascript; charset=utf-8"),
    asset!("planner.js", "text/javascript; charset=utf-8"),
    asset!("brand.js", "text/javascript; charset=utf-8"),
    asset!("live.js", "text/javascript; charset=utf-8"),
    asset!("orders.js", "text/javascript; charset=utf-8"),
    asset!("giveaways.js", "text/javascript; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
];

/// The pages load only what this server serves; sockets go back to it.
const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; \
                   object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The console's routes. Stateless, so they merge into any router.
/// `env.json` tells the pages whether the development routes exist
/// (`dev.rs`), so a production console asks for a token instead.
pub fn router<S: Clone + Send + Sync + 'static>(environment: Environment, dev_routes: bool) -> Router<S> {
    let env = serde_json::json!({
        "environment": environment.as_str(),
        "dev_routes": dev_routes,
    });
    Router::new()
        .route("/console", get(|| async { Redirect::permanent("/console/") }))
        .route(
            "/console/",
            get(|headers: HeaderMap| async move { serve("index.html", &headers) }),
        )
        .route(
            "/console/env.json",
            get(move || async move { ([(header::CACHE_CONTROL, "no-store")], axum::Json(env.clone())) }),
        )
        .route(
            "/console/{*file}",
            get(|Path(file): Path<String>, headers: HeaderMap| async move { serve(&file, &headers) }),
        )
}

/// A strong validator per asset, computed once (FNV-1a over the bytes).
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let hash = a.body.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                    (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
                });
                format!("\"{hash:016x}\"")
            })
            .collect()
    })
}

fn serve(name: &str, headers: &HeaderMap) -> Response {
    let Some(index) = ASSETS.iter().position(|a| a.name == name) else {
        return ApiError::NotFound("console file").into_response();
    };
    let asset = &ASSETS[index];
    let etag = &etags()[index];
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response()
    };
    let h = response.headers_mut();
    // Revalidate every time: a rebuilt binary serves new pages at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if asset.content_type == HTML {
        h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    const JS: &str = "text/javascript; charset=utf-8";

    async fn get(path: &str, etag: Option<&str>) -> Response {
        let mut request = Request::get(path);
        if let Some(etag) = etag {
            request = request.header(header::IF_NONE_MATCH, etag);
        }
        router::<()>(Environment::Test, true)
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn pages_are_served_with_their_type_and_a_policy() {
        for (path, content_type) in [
            ("/console/", HTML),
            ("/console/viewer.html", HTML),
            ("/console/host.html", HTML),
            ("/console/planner.html", HTML),
            ("/console/brand.html", HTML),
            ("/console/live.html", HTML),
            ("/console/orders.html", HTML),
            ("/console/common.js", JS),
            ("/console/brand.js", JS),
            ("/console/live.js", JS),
            ("/console/orders.js", JS),
            ("/console/giveaways.js", JS),
        ] {
            let response = get(path, None).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(response.headers()[header::CONTENT_TYPE], content_type, "{path}");
        }
        let page = get("/console/viewer.html", None).await;
        assert!(page.headers().contains_key(header::CONTENT_SECURITY_POLICY));
    }

    #[tokio::test]
    async fn unknown_files_are_404_and_paths_cannot_escape() {
        for path in [
            "/console/nope.js",
            "/console/../Cargo.toml",
            "/console/%2e%2e/Cargo.toml",
        ] {
            assert_eq!(get(path, None).await.status(), StatusCode::NOT_FOUND, "{path}");
        }
    }

    #[tokio::test]
    async fn a_known_etag_is_not_modified() {
        let first = get("/console/console.css", None).await;
        let etag = first.headers()[header::ETAG].to_str().unwrap().to_string();
        assert_eq!(
            get("/console/console.css", Some(&etag)).await.status(),
            StatusCode::NOT_MODIFIED
        );
    }

    #[tokio::test]
    async fn the_pages_learn_whether_dev_routes_exist() {
        let response = get("/console/env.json", None).await;
        let body = axum::body::to_bytes(response.into_body(), 1024).await.unwrap();
        let env: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(env["dev_routes"], true);
        let production = router::<()>(Environment::Production, false)
            .oneshot(Request::get("/console/env.json").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let body = axum::body::to_bytes(production.into_body(), 1024).await.unwrap();
        let env: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(env["dev_routes"], false);
    }

    #[tokio::test]
    async fn the_bare_prefix_redirects() {
        let response = get("/console", None).await;
        assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(response.headers()[header::LOCATION], "/console/");
    }

    #[test]
    fn every_html_page_links_only_embedded_files() {
        for asset in ASSETS.iter().filter(|a| a.content_type == HTML) {
            let text = std::str::from_utf8(asset.body).unwrap();
            for attr in ["src=\"", "href=\""] {
                for part in text.split(attr).skip(1) {
                    let target = part.split('"').next().unwrap();
                    let file = target.split(['?', '#']).next().unwrap();
                    if file.is_empty() || file.contains(':') || file.starts_with('/') {
                        assert!(!file.contains("://"), "{}: external {target}", asset.name);
                        continue;
                    }
                    assert!(
                        ASSETS.iter().any(|a| a.name == file),
                        "{} links {target}, which is not embedded",
                        asset.name
                    );
                }
            }
        }
    }
}
