//! What a brand's sales report is: how it groups, over which period, and its
//! rows and totals, with the checked arithmetic that adds them up.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use uuid::Uuid;

use hawker_core::error::{Error, Result};

/// What one row of the report stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// The SKU's product.
    Product,
    /// The live session the order was placed in.
    Session,
    /// The host on shift when the order was placed (`none` when no one was).
    Host,
    /// The agency running the session.
    Agency,
}

impl GroupBy {
    pub fn parse(s: &str) -> Option<GroupBy> {
        match s {
            "product" => Some(GroupBy::Product),
            "session" => Some(GroupBy::Session),
            "host" => Some(GroupBy::Host),
            "agency" => Some(GroupBy::Agency),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Product => "product",
            GroupBy::Session => "session",
            GroupBy::Host => "host",
            GroupBy::Agency => "agency",
        }
    }
}

/// Default length of a period when `from` is not given.
pub const DEFAULT_DAYS: i64 = 30;
/// Longest period a report covers.
pub const MAX_DAYS: i64 = 366;

/// `[from, to)`: orders paid at or after `from` and before `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl Period {
    /// Parses optional RFC 3339 bounds: `to` defaults to `now`, `from` to
    /// [`DEFAULT_DAYS`] before `to`. `from` must come before `to`, at most
    /// [`MAX_DAYS`] apart (`bad_period`).
    pub fn parse(from: Option<&str>, to: Option<&str>, now: DateTime<Utc>) -> Result<Period> {
        let instant = |name: &str, s: &str| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| Error::invalid("bad_period", format!("{name} must be an RFC 3339 time")))
        };
        let to = match to {
            Some(s) => instant("to", s)?,
            None => now,
        };
        let from = match from {
            Some(s) => instant("from", s)?,
            None => to
                .checked_sub_signed(Duration::days(DEFAULT_DAYS))
                .ok_or_else(|| Error::invalid("bad_period", "to is too early"))?,
        };
        if from >= to {
            return Err(Error::invalid("bad_period", "from must be before to"));
        }
        if to - from > Duration::days(MAX_DAYS) {
            return Err(Error::invalid(
                "bad_period",
                format!("a report covers at most {MAX_DAYS} days"),
            ));
        }
        Ok(Period { from, to })
    }
}

/// What a row (or a total) counts. Amounts are minor units of one currency.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    /// Paid orders (refunded ones included).
    pub orders: i64,
    pub units: i64,
    /// What buyers paid, after coupon discounts.
    pub gross_minor: i64,
    /// Orders with any refund or approved return.
    pub returned_orders: i64,
    /// Units of orders refunded in full (an approved return refunds in full).
    pub returned_units: i64,
    /// Everything refunded on these orders, partial refunds included.
    pub returned_minor: i64,
    /// `gross_minor - returned_minor`.
    pub net_minor: i64,
}

fn overflow() -> Error {
    Error::Internal(anyhow::anyhow!("a sales report sum does not fit in 64 bits"))
}

impl Figures {
    /// The sum of both, or an error if any figure overflows.
    pub fn checked_add(&self, o: &Figures) -> Result<Figures> {
        let add = |a: i64, b: i64| a.checked_add(b).ok_or_else(overflow);
        Ok(Figures {
            orders: add(self.orders, o.orders)?,
            units: add(self.units, o.units)?,
            gross_minor: add(self.gross_minor, o.gross_minor)?,
            returned_orders: add(self.returned_orders, o.returned_orders)?,
            returned_units: add(self.returned_units, o.returned_units)?,
            returned_minor: add(self.returned_minor, o.returned_minor)?,
            net_minor: add(self.net_minor, o.net_minor)?,
        })
    }

    /// Sets `net_minor` from gross and returned.
    pub fn with_net(mut self) -> Result<Figures> {
        self.net_minor = self
            .gross_minor
            .checked_sub(self.returned_minor)
            .ok_or_else(overflow)?;
        Ok(self)
    }
}

/// One row: a product, session, host or agency in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SalesReportRow {
    /// The product, session, host or agency id; `none` for orders placed with no host on shift.
    pub key: String,
    /// The product's name, session's title, host's display name or agency's name.
    pub label: String,
    /// ISO 4217 code of every amount in the row.
    pub currency: String,
    pub orders: i64,
    pub units: i64,
    pub gross_minor: i64,
    pub returned_orders: i64,
    pub returned_units: i64,
    pub returned_minor: i64,
    pub net_minor: i64,
}

/// The rows' sums in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SalesTotals {
    /// The currency of the amounts; null in an empty report.
    pub currency: Option<String>,
    pub orders: i64,
    pub units: i64,
    pub gross_minor: i64,
    pub returned_orders: i64,
    pub returned_units: i64,
    pub returned_minor: i64,
    pub net_minor: i64,
}

impl SalesReportRow {
    pub fn new(key: String, label: String, currency: String, f: Figures) -> SalesReportRow {
        SalesReportRow {
            key,
            label,
            currency,
            orders: f.orders,
            units: f.units,
            gross_minor: f.gross_minor,
            returned_orders: f.returned_orders,
            returned_units: f.returned_units,
            returned_minor: f.returned_minor,
            net_minor: f.net_minor,
        }
    }

    pub fn figures(&self) -> Figures {
        Figures {
            orders: self.orders,
            units: self.units,
            gross_minor: self.gross_minor,
            returned_orders: self.returned_orders,
            returned_units: self.returned_units,
            returned_minor: self.returned_minor,
            net_minor: self.net_minor,
        }
    }
}

impl SalesTotals {
    pub fn new(currency: Option<String>, f: Figures) -> SalesTotals {
        SalesTotals {
            currency,
            orders: f.orders,
            units: f.units,
            gross_minor: f.gross_minor,
            returned_orders: f.returned_orders,
            returned_units: f.returned_units,
            returned_minor: f.returned_minor,
            net_minor: f.net_minor,
        }
    }
}

/// A brand's sales over a period, grouped one way, returns netted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SalesReport {
    pub brand_id: Uuid,
    pub group_by: GroupBy,
    /// Start of the period (inclusive).
    pub from: DateTime<Utc>,
    /// End of the period (exclusive).
    pub to: DateTime<Utc>,
    /// The one currency of every row; null when the brand sold in several
    /// (or sold nothing).
    pub currency: Option<String>,
    /// Grouped by (key, currency), by `net_minor` descending, then key, then currency.
    pub rows: Vec<SalesReportRow>,
    /// The sums of all rows; null when they are in several currencies (see
    /// `totals_by_currency`).
    pub totals: Option<SalesTotals>,
    /// The sums per currency, by currency code; empty when nothing sold.
    pub totals_by_currency: Vec<SalesTotals>,
}
