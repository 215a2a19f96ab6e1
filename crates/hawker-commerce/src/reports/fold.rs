//! Pure assembly of a report from labelled groups: merge groups that share a
//! key and currency (sessions of one agency), order the rows, add up the
//! totals per currency — all with checked arithmetic.

use std::collections::BTreeMap;

use uuid::Uuid;

use hawker_core::error::Result;

use super::model::{Figures, GroupBy, Period, SalesReport, SalesReportRow, SalesTotals};

/// A group of orders with its row key and label already decided.
#[derive(Debug, Clone)]
pub struct Labelled {
    pub key: String,
    pub label: String,
    pub currency: String,
    pub figures: Figures,
}

/// The report of these groups.
pub fn assemble(
    brand_id: Uuid,
    group_by: GroupBy,
    period: Period,
    groups: Vec<Labelled>,
) -> Result<SalesReport> {
    let mut merged: BTreeMap<(String, String), (String, Figures)> = BTreeMap::new();
    for g in groups {
        match merged.get_mut(&(g.key.clone(), g.currency.clone())) {
            Some((_, figures)) => *figures = figures.checked_add(&g.figures)?,
            None => {
                merged.insert((g.key, g.currency), (g.label, g.figures));
            }
        }
    }
    let mut rows: Vec<SalesReportRow> = merged
        .into_iter()
        .map(|((key, currency), (label, figures))| SalesReportRow::new(key, label, currency, figures))
        .collect();
    rows.sort_by(|a, b| {
        b.net_minor
            .cmp(&a.net_minor)
            .then_with(|| a.key.cmp(&b.key))
            .then_with(|| a.currency.cmp(&b.currency))
    });
    let mut per_currency: BTreeMap<String, Figures> = BTreeMap::new();
    for row in &rows {
        let sum = per_currency.entry(row.currency.clone()).or_default();
        *sum = sum.checked_add(&row.figures())?;
    }
    let totals_by_currency: Vec<SalesTotals> = per_currency
        .into_iter()
        .map(|(currency, figures)| SalesTotals::new(Some(currency), figures))
        .collect();
    let (currency, totals) = match totals_by_currency.as_slice() {
        [] => (None, Some(SalesTotals::new(None, Figures::default()))),
        [one] => (one.currency.clone(), Some(one.clone())),
        _ => (None, None),
    };
    Ok(SalesReport {
        brand_id,
        group_by,
        from: period.from,
        to: period.to,
        currency,
        rows,
        totals,
        totals_by_currency,
    })
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;

    fn period() -> Period {
        Period {
            from: Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap(),
            to: Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap(),
        }
    }

    fn group(key: &str, currency: &str, gross: i64, returned: i64) -> Labelled {
        Labelled {
            key: key.into(),
            label: format!("label {key}"),
            currency: currency.into(),
            figures: Figures {
                orders: 1,
                units: 2,
                gross_minor: gross,
                returned_orders: i64::from(returned > 0),
                returned_units: 0,
                returned_minor: returned,
                net_minor: 0,
            }
            .with_net()
            .unwrap(),
        }
    }

    #[test]
    fn groups_with_one_key_and_currency_merge_and_rows_go_by_net_then_key() {
        let report = assemble(
            Uuid::nil(),
            GroupBy::Agency,
            period(),
            vec![
                group("b", "USD", 500, 0),
                group("a", "USD", 700, 200),
                group("c", "USD", 300, 0),
                group("c", "USD", 300, 100),
            ],
        )
        .unwrap();
        let keys: Vec<(&str, i64)> = report
            .rows
            .iter()
            .map(|r| (r.key.as_str(), r.net_minor))
            .collect();
        assert_eq!(keys, vec![("a", 500), ("b", 500), ("c", 500)]);
        assert_eq!(report.rows[2].orders, 2);
        assert_eq!(report.currency.as_deref(), Some("USD"));
        let totals = report.totals.unwrap();
        assert_eq!(
            (
                totals.orders,
                totals.gross_minor,
                totals.returned_minor,
                totals.net_minor
            ),
            (4, 1800, 300, 1500)
        );
        assert_eq!(report.totals_by_currency.len(), 1);
    }

    #[test]
    fn several_currencies_have_no_single_total_but_one_per_currency() {
        let report = assemble(
            Uuid::nil(),
            GroupBy::Product,
            period(),
            vec![group("p", "USD", 500, 0), group("p", "EUR", 900, 0)],
        )
        .unwrap();
        assert_eq!(report.rows.len(), 2);
        assert_eq!(report.currency, None);
        assert_eq!(report.totals, None);
        let currencies: Vec<_> = report
            .totals_by_currency
            .iter()
            .map(|t| t.currency.clone().unwrap())
            .collect();
        assert_eq!(currencies, vec!["EUR", "USD"]);
    }

    #[test]
    fn an_empty_report_has_zero_totals_and_no_currency() {
        let report = assemble(Uuid::nil(), GroupBy::Host, period(), vec![]).unwrap();
        assert_eq!(report.currency, None);
        assert_eq!(report.totals, Some(SalesTotals::new(None, Figures::default())));
        assert!(report.totals_by_currency.is_empty());
    }

    #[test]
    fn a_sum_past_i64_is_an_error_not_a_wrapped_number() {
        let huge = group("a", "USD", i64::MAX, 0);
        let result = assemble(Uuid::nil(), GroupBy::Agency, period(), vec![huge.clone(), huge]);
        assert!(result.is_err());
    }
}
