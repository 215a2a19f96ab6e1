//! What an order costs: subtotal, coupon discount and amount, in integer
//! minor units with checked arithmetic (an overflow is a refusal, never a
//! wrapped or negative amount).

/// The money of one order line, in minor units of the deal's currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price {
    /// `unit_price × quantity`.
    pub subtotal_minor: i64,
    /// What the coupon takes off; 0 without one. Never more than the subtotal.
    pub discount_minor: i64,
    /// `subtotal − discount`: what the buyer pays.
    pub amount_minor: i64,
}

/// `unit_price_minor × quantity`, or `None` if it does not fit in an `i64`
/// (or either input is negative).
pub fn subtotal_minor(unit_price_minor: i64, quantity: i32) -> Option<i64> {
    if unit_price_minor < 0 || quantity < 0 {
        return None;
    }
    unit_price_minor.checked_mul(i64::from(quantity))
}

/// The price of `quantity` units at `unit_price_minor` less `discount_minor`,
/// or `None` when the subtotal overflows or the discount is negative or
/// larger than the subtotal.
pub fn price(unit_price_minor: i64, quantity: i32, discount_minor: i64) -> Option<Price> {
    let subtotal_minor = subtotal_minor(unit_price_minor, quantity)?;
    if !(0..=subtotal_minor).contains(&discount_minor) {
        return None;
    }
    Some(Price {
        subtotal_minor,
        discount_minor,
        amount_minor: subtotal_minor.checked_sub(discount_minor)?,
    })
}

/// The discount a coupon gives on `subtotal_minor`, or `None` when the
/// subtotal is below the minimum spend. A percentage rounds down (in the
/// buyer's disfavour by less than one minor unit); no discount exceeds the
/// subtotal. The caller checks that the coupon applies (item, currency).
pub fn discount_minor(kind: &str, value: i64, min_spend_minor: i64, subtotal_minor: i64) -> Option<i64> {
    if subtotal_minor < min_spend_minor || subtotal_minor < 0 {
        return None;
    }
    let discount = match kind {
        // i128: `subtotal * percent` cannot overflow.
        "percent" => {
            let percent = i128::from(value.clamp(0, 100));
            i64::try_from(i128::from(subtotal_minor) * percent / 100).unwrap_or(subtotal_minor)
        }
        "fixed" => value.max(0),
        _ => return None,
    };
    Some(discount.min(subtotal_minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_percent_rounds_down_and_never_exceeds_the_subtotal() {
        assert_eq!(discount_minor("percent", 10, 0, 1999), Some(199));
        assert_eq!(discount_minor("percent", 15, 0, 999), Some(149));
        assert_eq!(discount_minor("percent", 100, 0, 1999), Some(1999));
        assert_eq!(discount_minor("percent", 1, 0, 99), Some(0));
        assert_eq!(discount_minor("percent", 50, 0, i64::MAX), Some(i64::MAX / 2));
    }

    #[test]
    fn a_fixed_discount_is_capped_at_the_subtotal() {
        assert_eq!(discount_minor("fixed", 500, 0, 1999), Some(500));
        assert_eq!(discount_minor("fixed", 5000, 0, 1999), Some(1999));
        assert_eq!(discount_minor("fixed", 500, 0, 0), Some(0));
    }

    #[test]
    fn below_the_minimum_spend_there_is_no_discount() {
        assert_eq!(discount_minor("fixed", 500, 2000, 1999), None);
        assert_eq!(discount_minor("percent", 10, 2000, 1999), None);
        assert_eq!(discount_minor("percent", 10, 2000, 2000), Some(200));
    }

    #[test]
    fn an_unknown_kind_or_negative_subtotal_gives_nothing() {
        assert_eq!(discount_minor("bogo", 10, 0, 1000), None);
        assert_eq!(discount_minor("fixed", 10, 0, -5), None);
    }

    #[test]
    fn a_price_is_subtotal_less_discount() {
        assert_eq!(
            price(1999, 3, 500),
            Some(Price {
                subtotal_minor: 5997,
                discount_minor: 500,
                amount_minor: 5497,
            })
        );
        assert_eq!(price(1999, 3, 0).map(|p| p.amount_minor), Some(5997));
        assert_eq!(price(1999, 1, 1999).map(|p| p.amount_minor), Some(0));
    }

    #[test]
    fn the_highest_allowed_price_times_the_most_units_fits() {
        use crate::config::{DEFAULT_MAX_PRICE_MINOR, MAX_PRICE_MINOR_LIMIT};
        use crate::purchase::MAX_QUANTITY;
        for max in [DEFAULT_MAX_PRICE_MINOR, MAX_PRICE_MINOR_LIMIT] {
            let p = price(max, MAX_QUANTITY, 0).expect("fits");
            assert_eq!(p.amount_minor, max * i64::from(MAX_QUANTITY));
            assert!(price(max, MAX_QUANTITY, p.subtotal_minor).is_some());
        }
        assert_eq!(subtotal_minor(MAX_PRICE_MINOR_LIMIT + 1, MAX_QUANTITY), None);
    }

    #[test]
    fn an_overflowing_or_inconsistent_price_is_refused() {
        assert_eq!(subtotal_minor(i64::MAX, 2), None);
        assert_eq!(subtotal_minor(i64::MAX / 100 + 1, 100), None);
        assert_eq!(subtotal_minor(i64::MAX / 100, 100), Some(i64::MAX / 100 * 100));
        assert_eq!(subtotal_minor(-1, 1), None);
        assert_eq!(price(i64::MAX, 2, 0), None);
        assert_eq!(price(100, 1, 101), None);
        assert_eq!(price(100, 1, -1), None);
    }
}
