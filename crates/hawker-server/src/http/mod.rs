//! The HTTP surface: the public router (`/v1`, health, OpenAPI) and the
//! admin router (`/metrics`, health), with the middleware every request goes
//! through (request id, tracing, metrics, timeout).

pub mod agency;
pub mod auctions;
pub mod auth;
pub mod calendar;
pub mod catalog;
pub mod comment_to_buy;
pub mod commerce;
pub mod console;
pub mod coupons;
pub mod dev;
pub mod error;
pub mod fulfilment;
pub mod giveaways;
pub mod groupbuys;
pub mod health;
pub mod me;
pub mod moderation;
pub mod notices;
pub mod openapi;
pub mod payments;
pub mod reports;
pub mod sessions;
pub mod socket;
mod socket_commands;
pub mod waitlists;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hawker_core::TokenKeys;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::config::Settings;
use error::{ApiError, ErrorBody};

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Everything a handler may need, behind one reference count: every request
/// clones the state once per layer and handler that takes it, and one
/// increment is cheaper than one per field.
#[derive(Clone)]
pub struct AppState(Arc<AppParts>);

impl AppState {
    pub fn new(parts: AppParts) -> AppState {
        AppState(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.0
    }
}

/// What [`AppState`] holds. Each field is shared.
pub struct AppParts {
    pub settings: Arc<Settings>,
    pub db: PgPool,
    /// Multiplexed, reconnecting Redis connection for commands.
    pub redis: hawker_redis::Redis,
    pub keys: Arc<TokenKeys>,
    /// Cancelled when shutdown begins: readiness turns 503 and long-lived
    /// tasks (sockets, schedulers) wind down.
    pub shutdown: CancellationToken,
    /// Long-lived tasks (sockets, background workers) that shutdown waits for.
    pub tasks: TaskTracker,
    /// This node's real-time hub.
    pub hub: hawker_hub::Hub,
    /// Deals, orders, payments, coupons; also carries out the socket's
    /// `deal.buy` and `coupon.claim` (handed to each socket in `socket.rs`).
    pub commerce: hawker_commerce::Commerce,
    /// Auctions and giveaways; also carries out the socket's `auction.bid`
    /// and `giveaway.enter`.
    pub live: hawker_live::Live,
    /// Session rows for socket joins, cached for a second (joins come in stampedes).
    pub sessions: Arc<hawker_agency::session_cache::SessionCache>,
    /// Open sockets per client address (`server.max_connections_per_ip`):
    /// behind a trusted proxy the listener cannot tell clients apart, so the
    /// socket route caps them by the address `X-Forwarded-For` gives.
    pub client_sockets: Arc<crate::client_ip::PerAddress>,
}

/// The public routes and their OpenAPI document: each module lists its own
/// routes (`router()`), and this only merges them, so a route and its
/// documentation cannot drift apart.
pub fn api_router() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let router = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(health::router())
        .merge(me::router())
        .merge(notices::router())
        .merge(sessions::router())
        .merge(moderation::router())
        .merge(socket::router())
        .merge(commerce::router())
        .merge(coupons::router())
        .merge(auctions::router())
        .merge(giveaways::router())
        .merge(groupbuys::router())
        .merge(comment_to_buy::router())
        .merge(waitlists::router())
        .merge(payments::router())
        .merge(fulfilment::router())
        .merge(agency::router())
        .merge(catalog::router())
        .merge(calendar::router())
        .merge(reports::router());
    let (router, mut doc) = router.split_for_parts();
    openapi::complete(&mut doc);
    (router, doc)
}

/// The OpenAPI document alone (for `hawker openapi` and the tests).
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    api_router().1
}

/// The public application: `/v1`, health, `/openapi.json`, `/docs`.
pub fn public_app(state: AppState) -> Router {
    let (router, doc) = api_router();
    let doc = Arc::new(doc);
    let timeout = state.settings.server.request_timeout();
    // The web console, and in development and test only, its helper routes.
    let (environment, listen) = (state.settings.environment, state.settings.server.listen);
    let mut router = router.merge(console::router(environment, dev::enabled(environment, listen)));
    if let Some(dev) = dev::router(environment, listen) {
        router = router.merge(dev);
    }
    let router = router
        .route(
            "/openapi.json",
            get(move || async move { axum::Json(doc.as_ref().clone()) }),
        )
        .route("/docs", get(openapi::docs_page))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            Arc::new(Edge {
                timeout,
                metrics: HttpMetrics::default(),
                shutdown: state.shutdown.clone(),
            }),
            edge,
        ))
        .with_state(state);
    // The client's address is set by the server loop (`serve.rs`), before
    // these layers, so the request's span already names the client.
    with_common_layers(router)
}

/// What every public request goes through inside its span, in one layer
/// (one boxed future per request instead of three).
struct Edge {
    /// `server.request_timeout_secs`: a slower request is answered 504.
    timeout: Duration,
    metrics: HttpMetrics,
    shutdown: CancellationToken,
}

/// The request's time limit, its metrics, and once shutdown has begun,
/// `Connection: close` on every answer (a WebSocket upgrade excepted): hyper
/// closes the connection after it, so a keep-alive client learns to
/// reconnect (through its load balancer, to another node) from the answer
/// itself, instead of sending its next request on a connection the end of
/// the drain would close under it.
async fn edge(State(edge): State<Arc<Edge>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = method_label(request.method());
    let mut response = match tokio::time::timeout(edge.timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (
            StatusCode::GATEWAY_TIMEOUT,
            axum::Json(ErrorBody {
                error: "timeout",
                message: format!("the request took longer than {}s", edge.timeout.as_secs()),
            }),
        )
            .into_response(),
    };
    edge.metrics.record(
        route.as_ref().map_or("unmatched", |r| r.as_str()),
        method,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    if edge.shutdown.is_cancelled() && response.status() != StatusCode::SWITCHING_PROTOCOLS {
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    response
}

/// The admin application: `/metrics` and health, on its own listener so
/// metrics never leak to the public side.
pub fn admin_app(state: AppState, metrics: PrometheusHandle) -> Router {
    let router = Router::new()
        .route("/metrics", get(move || async move { metrics.render() }))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz_admin))
        .fallback(not_found)
        .with_state(state);
    with_common_layers(router)
}

/// Request id (taken from `x-request-id` or minted), a tracing span carrying
/// it so every log line of the request has it, the id echoed on the
/// response, and panics turned into 500s.
fn with_common_layers(router: Router) -> Router {
    let header = HeaderName::from_static(REQUEST_ID_HEADER);
    router.layer(
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::new(header.clone(), MakeRequestUuid))
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(|request: &Request| {
                        let request_id = request
                            .headers()
                            .get(REQUEST_ID_HEADER)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-");
                        // Set by the server loop (`serve.rs`) on the public listener only.
                        let client_ip = request.extensions().get::<crate::client_ip::ClientIp>();
                        tracing::info_span!(
                            "request",
                            request_id = %request_id,
                            method = %request.method(),
                            path = %loggable_path(request.uri().path()),
                            client_ip = client_ip.map(|c| tracing::field::display(c.0)),
                        )
                    })
                    .on_response(DefaultOnResponse::new().level(Level::INFO)),
            )
            .layer(PropagateRequestIdLayer::new(header))
            .layer(CatchPanicLayer::custom(|_| {
                ApiError::Internal(anyhow::anyhow!("handler panicked")).into_response()
            })),
    )
}

/// The request's path as logs may show it: a calendar feed's path is its
/// secret, so only the prefix is logged.
fn loggable_path(path: &str) -> &str {
    if path.starts_with(calendar::FEED_PATH_PREFIX) {
        "/v1/calendar/{token}"
    } else {
        path
    }
}

async fn not_found() -> Response {
    ApiError::NotFound("route").into_response()
}

async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        axum::Json(ErrorBody {
            error: "method_not_allowed",
            message: "method not allowed on this route".into(),
        }),
    )
        .into_response()
}

/// The method as a metric label: the standard methods by name, anything
/// else as `other`, so a client cannot mint label values (and series).
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The request metrics' handles, per route, method and status: a request
/// finds its pair in a read-mostly map instead of building labels and
/// registering them (three strings and two registry lookups per request).
#[derive(Default)]
struct HttpMetrics {
    routes: std::sync::RwLock<HashMap<String, Vec<RouteMetric>>>,
}

struct RouteMetric {
    method: &'static str,
    status: u16,
    requests: metrics::Counter,
    duration: metrics::Histogram,
}

impl HttpMetrics {
    fn record(&self, route: &str, method: &'static str, status: u16, seconds: f64) {
        let found = self.routes.read().ok().and_then(|routes| {
            let m = routes
                .get(route)?
                .iter()
                .find(|m| m.method == method && m.status == status)?;
            m.requests.increment(1);
            m.duration.record(seconds);
            Some(())
        });
        if found.is_some() {
            return;
        }
        let labels = [
            ("method", method.to_string()),
            ("route", route.to_string()),
            ("status", status.to_string()),
        ];
        let metric = RouteMetric {
            method,
            status,
            requests: metrics::counter!("hawker_http_requests_total", &labels),
            duration: metrics::histogram!("hawker_http_request_duration_seconds", &labels),
        };
        metric.requests.increment(1);
        metric.duration.record(seconds);
        if let Ok(mut routes) = self.routes.write() {
            let same = routes.entry(route.to_string()).or_default();
            if !same.iter().any(|m| m.method == method && m.status == status) {
                same.push(metric);
            }
        }
    }
}
