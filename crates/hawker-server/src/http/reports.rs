//! Brand reports over HTTP (tag `reports`): a brand's sales per product,
//! session, host or agency over a period, returns netted, as JSON or CSV.
//! The report is built in `hawker_commerce::reports`; this module parses,
//! negotiates the format, calls and maps errors, and runs no SQL.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use hawker_commerce::reports::{self, GroupBy, ReportRequest, SalesReport};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::Auth;
use super::error::{ApiError, ApiResult, ErrorBody, Json, Path, Query, Unauthenticated, Unavailable};
use super::AppState;

/// The reports' routes, for `api_router` to merge.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(sales_report))
}

/// The body's format, `?format=` (else the `Accept` header decides).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReportFormat {
    Json,
    Csv,
}

/// `?group_by=&from=&to=&format=` of a sales report.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SalesQuery {
    /// One row per `product` (the default), `session`, `host` or `agency`
    /// (and currency); anything else: 400 `bad_group_by`.
    #[param(value_type = Option<GroupBy>)]
    pub group_by: Option<String>,
    /// Start of the period, inclusive (RFC 3339); default 30 days before `to`.
    #[param(value_type = Option<String>, format = DateTime)]
    pub from: Option<String>,
    /// End of the period, exclusive (RFC 3339); default now. At most 366
    /// days after `from`, and after it (else 400 `bad_period`).
    #[param(value_type = Option<String>, format = DateTime)]
    pub to: Option<String>,
    /// `csv` for the CSV file (as `Accept: text/csv` asks), `json` (the
    /// default) for JSON; anything else: 400 `bad_format`.
    #[param(inline, value_type = Option<ReportFormat>)]
    pub format: Option<String>,
}

/// Whether the caller asked for CSV: `format` if given, else the first of
/// `text/csv` and `application/json` named in `Accept`.
fn wants_csv(format: Option<&str>, headers: &HeaderMap) -> ApiResult<bool> {
    match format {
        Some("csv") => return Ok(true),
        Some("json") => return Ok(false),
        Some(_) => return Err(ApiError::bad_request("bad_format", "format must be json or csv")),
        None => {}
    }
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .find(|m| m == "text/csv" || m == "application/json");
    Ok(accept.as_deref() == Some("text/csv"))
}

fn csv_response(report: &SalesReport) -> Response {
    let disposition = format!("attachment; filename=\"{}\"", reports::csv::file_name(report));
    let mut response = reports::csv::render(report).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

/// The brand's sales over a period, across every agency: paid orders of
/// its SKUs by `paid_at` in `[from, to)`, per product, session, host (on
/// shift at purchase) or agency, and per currency, with every refund and
/// approved return of those orders subtracted (`net_minor`). Rows by
/// `net_minor` descending, then key. JSON, or CSV with `Accept: text/csv`
/// or `?format=csv` (formula-like cells neutralised with a leading `'`).
/// The brand's tokens and admins.
#[utoipa::path(get, path = "/v1/brands/{brand_id}/reports/sales", tag = "reports", security(("bearer" = [])),
    params(("brand_id" = Uuid, Path), SalesQuery),
    responses(
        (status = 200, description = "the report; CSV with `Accept: text/csv` or `format=csv`",
            headers(("Content-Disposition" = String,
                description = "CSV only: `attachment; filename=\"sales-<group_by>-<from>-<to>.csv\"`, times as `YYYYMMDDTHHMMSSZ`")),
            content(
                (SalesReport = "application/json"),
                (String = "text/csv", example = "key,label,currency,orders,units,gross_minor,returned_orders,returned_units,returned_minor,net_minor\r\n0192f0c4-7d41-7c55-9d0e-3f6f4f0a1b01,Velvet Lipstick,USD,12,14,27986,1,1,1999,25987\r\n"),
            )),
        (status = 400, body = ErrorBody, description = "bad_group_by, bad_period, bad_format, bad_query, bad_path"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "not this brand's token, nor an admin"),
        (status = 404, body = ErrorBody, description = "no such brand (admins)"),
        Unavailable,
    ))]
pub async fn sales_report(
    State(state): State<AppState>,
    auth: Auth,
    Path(brand_id): Path<Uuid>,
    Query(query): Query<SalesQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let request = ReportRequest {
        group_by: query.group_by.as_deref(),
        from: query.from.as_deref(),
        to: query.to.as_deref(),
    };
    let report =
        reports::brand_sales(&state.db, auth.claims(), brand_id, &request, chrono::Utc::now()).await?;
    Ok(if wants_csv(query.format.as_deref(), &headers)? {
        csv_response(&report)
    } else {
        Json(report).into_response()
    })
}
