//! The payment provider's webhook and refunds.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hawker_commerce::payments::{self, PaymentEvent, Refund, WebhookOutcome, SIGNATURE_HEADER};
use hawker_commerce::Error;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::Auth;
use super::error::{ApiError, ApiResult, ErrorBody, Json, Path, Unauthenticated, Unavailable};
use super::AppState;

/// The payment webhook and refunds, for `api_router` to merge.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(payment_webhook))
        .routes(routes!(create_refund))
}

/// A refused signature is 401 (the caller is not the provider); every other
/// error takes the usual mapping.
fn webhook_error(e: Error) -> Response {
    match e {
        Error::Invalid {
            code: "bad_signature",
            message,
        } => {
            let mut response = (
                StatusCode::UNAUTHORIZED,
                axum::Json(ErrorBody {
                    error: "bad_signature",
                    message,
                }),
            )
                .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("X-Hawker-Signature"),
            );
            response
        }
        other => ApiError::from(other).into_response(),
    }
}

/// The payment provider's webhook. No bearer token: the body is signed.
/// `X-Hawker-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`
/// with the shared webhook secret, at most five minutes old. A
/// `payment.succeeded` event marks a pending order paid (`applied`), or, if
/// the order expired or was cancelled, marks it `refund_due`; a second payment
/// of a paid order is `duplicate_order`. Each `event_id` is applied once: a
/// repeat answers the first outcome with `replayed: true`.
#[utoipa::path(post, path = "/v1/payments/webhook", tag = "payments",
    params(("X-Hawker-Signature" = String, Header,
        description = "`t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<raw body>\">`")),
    request_body(content = PaymentEvent, content_type = "application/json"),
    responses(
        (status = 200, body = WebhookOutcome, description = "applied, refund_due, duplicate_order or ignored"),
        (status = 400, body = ErrorBody, description = "bad_event (not JSON, missing fields, bad event_id), \
            amount_mismatch (the amount or currency is not the order's; nothing is changed)"),
        (status = 401, body = ErrorBody, description = "bad_signature: missing, malformed, wrong or stale; \
            nothing is changed"),
        (status = 404, body = ErrorBody, description = "no such order"),
        Unavailable,
    ))]
pub async fn payment_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<WebhookOutcome>, Response> {
    let signature = match headers.get(SIGNATURE_HEADER).map(HeaderValue::to_str) {
        None => None,
        Some(Ok(value)) => Some(value),
        Some(Err(_)) => {
            return Err(webhook_error(Error::invalid(
                "bad_signature",
                "the webhook signature is refused: the header is not ASCII",
            )))
        }
    };
    payments::handle_webhook(&state.commerce, signature, &body)
        .await
        .map(Json)
        .map_err(webhook_error)
}

/// A refund or return to record.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"amount_minor": 500, "reason": "damaged in transit", "kind": "return"}))]
pub struct NewRefund {
    /// At least 1; all refunds of an order together never exceed its amount.
    #[schema(minimum = 1)]
    pub amount_minor: i64,
    /// At most 500 characters (Unicode scalar values), may be empty; without
    /// control (line breaks included), bidi or zero-width characters.
    #[serde(default)]
    #[schema(
        max_length = 500,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u061c\\u180e\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff]*$"
    )]
    pub reason: String,
    /// `refund` (default) or `return` (goods sent back; reduces commissions the same way).
    #[serde(default = "default_kind")]
    #[schema(default = "refund", pattern = "^(refund|return)$")]
    pub kind: String,
}

fn default_kind() -> String {
    "refund".into()
}

/// Records a refund or return of a paid order: admins, the session's agency
/// or the brand owning the product. The order becomes `partially_refunded`
/// or, once refunds reach its amount, `refunded`.
#[utoipa::path(post, path = "/v1/orders/{order_id}/refunds", tag = "payments",
    security(("bearer" = [])),
    params(("order_id" = Uuid, Path, description = "the order")),
    request_body = NewRefund,
    responses(
        (status = 201, body = Refund),
        (status = 400, body = ErrorBody, description = "bad_amount, bad_kind, bad_reason, bad_json, bad_path"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "the caller may see the order (its buyer, a host of \
            its session) but is not an admin, the session's agency or the product's brand"),
        (status = 404, body = ErrorBody, description = "no such order, or not the caller's to see"),
        (status = 409, body = ErrorBody, description = "order_not_paid (only paid or partially refunded orders), \
            refund_exceeds_amount"),
        Unavailable,
    ))]
pub async fn create_refund(
    State(state): State<AppState>,
    auth: Auth,
    Path(order_id): Path<Uuid>,
    Json(new): Json<NewRefund>,
) -> ApiResult<(StatusCode, Json<Refund>)> {
    let refund = payments::refund(
        &state.commerce,
        auth.claims(),
        order_id,
        new.amount_minor,
        &new.reason,
        &new.kind,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(refund)))
}
