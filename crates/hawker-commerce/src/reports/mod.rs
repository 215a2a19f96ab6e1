//! A brand's sales report: its paid orders over a period, across every
//! agency, per product, session, host or agency, with returns netted; as
//! JSON ([`SalesReport`]) or CSV ([`csv`]).
//!
//! What counts: orders whose SKU is the brand's, paid (status `paid`,
//! `partially_refunded` or `refunded`: a refunded order counts as sold, then
//! returned) with `paid_at` in `[from, to)`. Orders paid after they expired
//! (`refund_due`) never counted as sales. Returns: every refund recorded on
//! those orders so far (an approved return is a refund of the rest of the
//! order), whenever it happened, subtracts from `net_minor`; the units of an
//! order refunded in full are `returned_units`.
//!
//! The sums are commerce's (`customer_order`, `refund`); labels come from
//! their owners: product names from `hawker-catalog`, session titles,
//! their agencies, host and agency names from `hawker-agency`.

pub mod csv;
mod fold;
pub mod model;

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use hawker_core::error::{Error, Result};
use hawker_core::Claims;

use fold::Labelled;
pub use model::{Figures, GroupBy, Period, SalesReport, SalesReportRow, SalesTotals};

/// The key of orders placed with no host on shift, in host reports.
pub const NO_HOST_KEY: &str = "none";
/// Their label.
pub const NO_HOST_LABEL: &str = "No host on shift";

/// A report's parameters as they arrive (`?group_by=&from=&to=`).
#[derive(Debug, Clone, Default)]
pub struct ReportRequest<'a> {
    pub group_by: Option<&'a str>,
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
}

impl ReportRequest<'_> {
    /// The grouping (default `product`; unknown: `bad_group_by`) and the period ([`Period::parse`]).
    pub fn parse(&self, now: DateTime<Utc>) -> Result<(GroupBy, Period)> {
        let group_by = match self.group_by {
            None => GroupBy::Product,
            Some(s) => GroupBy::parse(s).ok_or_else(|| {
                Error::invalid(
                    "bad_group_by",
                    "group_by must be product, session, host or agency",
                )
            })?,
        };
        Ok((group_by, Period::parse(self.from, self.to, now)?))
    }
}

/// One group of the brand's orders as Postgres sums it. Money sums arrive
/// as text (Postgres sums bigints as numeric) and are parsed into `i64`, so
/// a sum past 64 bits is an error rather than a wrapped number.
#[derive(sqlx::FromRow)]
struct Group {
    key: Option<Uuid>,
    currency: String,
    orders: i64,
    units: i64,
    gross: String,
    returned_orders: i64,
    returned_units: i64,
    returned: String,
}

fn money(sum: &str) -> Result<i64> {
    sum.parse().map_err(|_| {
        Error::Internal(anyhow::anyhow!(
            "a sales report sum ({sum}) does not fit in 64 bits"
        ))
    })
}

/// The brand's sales over the request's period, grouped (the brand's tokens
/// and admins; another brand: 403, before the request is judged; an admin
/// asking for no such brand: 404).
pub async fn brand_sales(
    db: &PgPool,
    claims: &Claims,
    brand_id: Uuid,
    request: &ReportRequest<'_>,
    now: DateTime<Utc>,
) -> Result<SalesReport> {
    if !hawker_catalog::access::may_manage(claims, brand_id) {
        return Err(Error::forbidden(
            "a brand's sales report is for that brand's tokens and admins",
        ));
    }
    let (group_by, period) = request.parse(now)?;
    if claims.is_admin() && !hawker_agency::discover::brand_exists(db, brand_id).await? {
        return Err(Error::NotFound("brand"));
    }
    let groups = sums(db, brand_id, group_by, period).await?;
    let labelled = label(db, group_by, groups).await?;
    fold::assemble(brand_id, group_by, period, labelled)
}

/// Postgres' sums per product, session or host (agencies are summed from
/// their sessions) and currency. The brand's SKUs (`sku_brand_code`), then
/// each SKU's orders of the period (`customer_order_sku_paid_idx`,
/// migrations/0012) and their refunds (`refund_order_idx`): the work grows
/// with the brand's sales, not with every brand's.
async fn sums(db: &PgPool, brand_id: Uuid, group_by: GroupBy, period: Period) -> Result<Vec<Group>> {
    let key = match group_by {
        GroupBy::Product => "product_id",
        GroupBy::Host => "host_id",
        GroupBy::Session | GroupBy::Agency => "session_id",
    };
    Ok(sqlx::query_as(&format!(
        "with o as (
            select k.product_id, o.session_id, o.host_id, o.quantity, o.amount_minor,
                   o.currency::text as currency, o.status, r.returned
              from sku k join customer_order o on o.sku_id = k.sku_id
             cross join lateral (select coalesce(sum(r.amount_minor), 0) as returned
                                   from refund r where r.order_id = o.order_id) r
             where k.brand_id = $1 and o.paid_at >= $2 and o.paid_at < $3
               and o.status in ('paid', 'partially_refunded', 'refunded')
         )
         select {key} as key, currency,
                count(*)::bigint as orders, sum(quantity)::bigint as units,
                sum(amount_minor)::text as gross,
                (count(*) filter (where returned > 0))::bigint as returned_orders,
                coalesce(sum(quantity) filter (where status = 'refunded'), 0)::bigint as returned_units,
                sum(returned)::text as returned
           from o
          group by 1, 2"
    ))
    .bind(brand_id)
    .bind(period.from)
    .bind(period.to)
    .fetch_all(db)
    .await?)
}

fn ids(groups: &[Group]) -> Vec<Uuid> {
    let set: HashSet<Uuid> = groups.iter().filter_map(|g| g.key).collect();
    set.into_iter().collect()
}

/// Each group's row key and label, from the owners of the rows it names.
async fn label(db: &PgPool, group_by: GroupBy, groups: Vec<Group>) -> Result<Vec<Labelled>> {
    let keys = ids(&groups);
    // (row key, label) per group key; a missing id is labelled by itself.
    let names: std::collections::HashMap<Uuid, (String, String)> = match group_by {
        GroupBy::Product => hawker_catalog::products::product_names(db, &keys)
            .await?
            .into_iter()
            .map(|(id, name)| (id, (id.to_string(), name)))
            .collect(),
        GroupBy::Host => hawker_agency::names::hosts(db, &keys)
            .await?
            .into_iter()
            .map(|(id, name)| (id, (id.to_string(), name)))
            .collect(),
        GroupBy::Session => hawker_agency::names::sessions(db, &keys)
            .await?
            .into_values()
            .map(|s| (s.session_id, (s.session_id.to_string(), s.title)))
            .collect(),
        GroupBy::Agency => {
            let sessions = hawker_agency::names::sessions(db, &keys).await?;
            let agency_ids: Vec<Uuid> = sessions
                .values()
                .map(|s| s.agency_id)
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            let agencies = hawker_agency::names::agencies(db, &agency_ids).await?;
            sessions
                .into_values()
                .map(|s| {
                    let name = agencies.get(&s.agency_id).cloned().unwrap_or_default();
                    (s.session_id, (s.agency_id.to_string(), name))
                })
                .collect()
        }
    };
    groups
        .into_iter()
        .map(|g| {
            let figures = Figures {
                orders: g.orders,
                units: g.units,
                gross_minor: money(&g.gross)?,
                returned_orders: g.returned_orders,
                returned_units: g.returned_units,
                returned_minor: money(&g.returned)?,
                net_minor: 0,
            }
            .with_net()?;
            let (key, label) = match g.key {
                None => (NO_HOST_KEY.to_string(), NO_HOST_LABEL.to_string()),
                Some(id) => names
                    .get(&id)
                    .cloned()
                    .unwrap_or_else(|| (id.to_string(), id.to_string())),
            };
            Ok(Labelled {
                key,
                label,
                currency: g.currency,
                figures,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 2, 12, 0, 0).unwrap()
    }

    fn parse(group_by: Option<&str>, from: Option<&str>, to: Option<&str>) -> Result<(GroupBy, Period)> {
        ReportRequest { group_by, from, to }.parse(now())
    }

    fn code(r: Result<(GroupBy, Period)>) -> &'static str {
        r.err().map(|e| e.code()).unwrap_or("ok")
    }

    #[test]
    fn the_default_is_per_product_over_the_last_30_days() {
        let (g, p) = parse(None, None, None).unwrap();
        assert_eq!(g, GroupBy::Product);
        assert_eq!((p.from, p.to), (now() - Duration::days(30), now()));
        let (_, p) = parse(Some("agency"), None, Some("2026-11-30T00:00:00+01:00")).unwrap();
        assert_eq!(p.to, Utc.with_ymd_and_hms(2026, 11, 29, 23, 0, 0).unwrap());
        assert_eq!(p.from, p.to - Duration::days(30));
    }

    #[test]
    fn bad_groupings_and_periods_are_refused_with_their_codes() {
        assert_eq!(code(parse(Some("brand"), None, None)), "bad_group_by");
        assert_eq!(code(parse(Some(""), None, None)), "bad_group_by");
        assert_eq!(code(parse(None, Some("yesterday"), None)), "bad_period");
        assert_eq!(
            code(parse(
                None,
                Some("2026-12-01T00:00:00Z"),
                Some("2026-12-01T00:00:00Z")
            )),
            "bad_period"
        );
        assert_eq!(
            code(parse(
                None,
                Some("2026-12-02T00:00:00Z"),
                Some("2026-12-01T00:00:00Z")
            )),
            "bad_period"
        );
        assert_eq!(
            code(parse(
                None,
                Some("2025-01-01T00:00:00Z"),
                Some("2026-01-03T00:00:00Z")
            )),
            "bad_period"
        );
        assert_eq!(
            code(parse(
                Some("host"),
                Some("2025-01-01T00:00:00Z"),
                Some("2026-01-02T00:00:00Z")
            )),
            "ok"
        );
    }
}
