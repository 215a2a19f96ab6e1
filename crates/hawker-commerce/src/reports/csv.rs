//! A sales report as CSV (RFC 4180): a header row, then one line per row.
//! Cells that a spreadsheet would run as a formula (starting with `=`, `+`,
//! `-`, `@`, a tab or a carriage return) get a leading `'`.

use super::model::{Period, SalesReport};

/// The header row's columns.
pub const COLUMNS: [&str; 10] = [
    "key",
    "label",
    "currency",
    "orders",
    "units",
    "gross_minor",
    "returned_orders",
    "returned_units",
    "returned_minor",
    "net_minor",
];

/// One cell: neutralised if a spreadsheet would read it as a formula, quoted
/// if it holds a comma, a quote or a line break.
pub fn cell(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_string()
    };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

/// The report's rows as CSV, lines ended by CRLF.
pub fn render(report: &SalesReport) -> String {
    let mut out = COLUMNS.join(",");
    out.push_str("\r\n");
    for r in &report.rows {
        // Numbers are written as they are: a negative net is a number, not a formula.
        let cells = [
            cell(&r.key),
            cell(&r.label),
            cell(&r.currency),
            r.orders.to_string(),
            r.units.to_string(),
            r.gross_minor.to_string(),
            r.returned_orders.to_string(),
            r.returned_units.to_string(),
            r.returned_minor.to_string(),
            r.net_minor.to_string(),
        ];
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    }
    out
}

/// `sales-<group_by>-<from>-<to>.csv`, the times in UTC as `YYYYMMDDTHHMMSSZ`.
pub fn file_name(report: &SalesReport) -> String {
    file_name_of(
        report.group_by.as_str(),
        Period {
            from: report.from,
            to: report.to,
        },
    )
}

fn file_name_of(group_by: &str, period: Period) -> String {
    const COMPACT: &str = "%Y%m%dT%H%M%SZ";
    format!(
        "sales-{group_by}-{}-{}.csv",
        period.from.format(COMPACT),
        period.to.format(COMPACT)
    )
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use uuid::Uuid;

    use super::super::model::{Figures, GroupBy, SalesReportRow};
    use super::*;

    #[test]
    fn formula_cells_get_a_leading_quote_and_special_characters_are_quoted() {
        assert_eq!(cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(cell("+1"), "'+1");
        assert_eq!(cell("-1"), "'-1");
        assert_eq!(cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(cell("\tx"), "'\tx");
        assert_eq!(cell("\rx"), "\"'\rx\"");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("two\nlines"), "\"two\nlines\"");
        assert_eq!(cell("Lipstick"), "Lipstick");
    }

    #[test]
    fn the_body_is_a_header_and_one_line_per_row() {
        let f = Figures {
            orders: 2,
            units: 3,
            gross_minor: 3000,
            returned_orders: 1,
            returned_units: 1,
            returned_minor: 1000,
            net_minor: 2000,
        };
        let report = SalesReport {
            brand_id: Uuid::nil(),
            group_by: GroupBy::Product,
            from: Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap(),
            to: Utc.with_ymd_and_hms(2026, 12, 1, 12, 30, 5).unwrap(),
            currency: Some("USD".into()),
            rows: vec![SalesReportRow::new(
                "k1".into(),
                "Ruby, matte".into(),
                "USD".into(),
                f,
            )],
            totals: None,
            totals_by_currency: vec![],
        };
        assert_eq!(
            render(&report),
            "key,label,currency,orders,units,gross_minor,returned_orders,returned_units,returned_minor,net_minor\r\n\
             k1,\"Ruby, matte\",USD,2,3,3000,1,1,1000,2000\r\n"
        );
        assert_eq!(
            file_name(&report),
            "sales-product-20261101T000000Z-20261201T123005Z.csv"
        );
    }
}
