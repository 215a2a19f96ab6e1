//! The arithmetic of commissions, kept pure so it can be checked by hand.
//!
//! Rounding: every amount is rounded down to the minor unit, and every
//! clawback is the *difference* between two such amounts (before and after
//! the refund), so however an order is refunded — at once or in parts — the
//! entries of a sale and its clawbacks always add up to exactly the
//! commission on what was finally kept. Splits work the same way: the host's
//! part is rounded down, the agency takes the rest.

use uuid::Uuid;

/// 100% in basis points.
pub const BPS: i64 = 10_000;

/// A commission split between the agency and the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Split {
    pub agency: i64,
    pub host: i64,
}

impl Split {
    pub fn total(self) -> i64 {
        self.agency + self.host
    }
}

/// `amount × bps / 10,000`, rounded down (amounts are never negative here).
pub fn bps_of(amount: i64, bps: i64) -> i64 {
    let value = i128::from(amount) * i128::from(bps) / i128::from(BPS);
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Splits `total` between host and agency; with no host, the agency takes all.
pub fn split(total: i64, host_share_bps: i64, has_host: bool) -> Split {
    let host = if has_host {
        bps_of(total, host_share_bps)
    } else {
        0
    };
    Split {
        agency: total - host,
        host,
    }
}

/// The commission on a sale of `net_amount` (after discounts and refunds).
pub fn on_sale(net_amount: i64, percent_bps: i64, host_share_bps: i64, has_host: bool) -> Split {
    split(bps_of(net_amount, percent_bps), host_share_bps, has_host)
}

/// The (negative) change a refund of `refund` makes to the commission of an
/// order of `order_amount` of which `refunded_before` was already refunded.
pub fn clawback(
    order_amount: i64,
    refunded_before: i64,
    refund: i64,
    percent_bps: i64,
    host_share_bps: i64,
    has_host: bool,
) -> Split {
    let kept_before = (order_amount - refunded_before).max(0);
    let kept_after = (kept_before - refund).max(0);
    let before = on_sale(kept_before, percent_bps, host_share_bps, has_host);
    let after = on_sale(kept_after, percent_bps, host_share_bps, has_host);
    Split {
        agency: after.agency - before.agency,
        host: after.host - before.host,
    }
}

/// Pay for `seconds` on air at `rate_per_hour`, rounded down.
pub fn hourly(rate_per_hour: i64, seconds: i64) -> i64 {
    let value = i128::from(rate_per_hour) * i128::from(seconds.max(0)) / 3600;
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Shares a session's slot fee: the hosts' part (by `host_share_bps`) is
/// divided between the hosts by seconds on air, the largest remainders
/// getting the leftover minor units; the agency keeps the rest, and all of
/// it when nobody was on air. Returns (agency, per host).
pub fn slot_fee(fee: i64, host_share_bps: i64, worked: &[(Uuid, i64)]) -> (i64, Vec<(Uuid, i64)>) {
    let seconds: i64 = worked.iter().map(|(_, s)| (*s).max(0)).sum();
    if seconds == 0 {
        return (fee, Vec::new());
    }
    let pool = bps_of(fee, host_share_bps);
    let mut shares: Vec<(Uuid, i64, i128)> = worked
        .iter()
        .map(|(host, s)| {
            let exact = i128::from(pool) * i128::from((*s).max(0));
            let whole = exact / i128::from(seconds);
            let remainder = exact % i128::from(seconds);
            (*host, i64::try_from(whole).unwrap_or(0), remainder)
        })
        .collect();
    let mut leftover = pool - shares.iter().map(|(_, w, _)| w).sum::<i64>();
    let mut order: Vec<usize> = (0..shares.len()).collect();
    // Largest remainder first; ties by host id so the result is reproducible.
    order.sort_by(|&a, &b| shares[b].2.cmp(&shares[a].2).then(shares[a].0.cmp(&shares[b].0)));
    for i in order {
        if leftover == 0 {
            break;
        }
        shares[i].1 += 1;
        leftover -= 1;
    }
    let hosts: Vec<(Uuid, i64)> = shares.into_iter().map(|(h, w, _)| (h, w)).collect();
    let paid: i64 = hosts.iter().map(|(_, w)| w).sum();
    (fee - paid, hosts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sale_pays_the_percentage_rounded_down_and_splits_it() {
        // 10% of 19.99 = 1.999 → 1.99; the host's 40% of 1.99 = 0.796 → 0.79.
        let s = on_sale(1999, 1000, 4000, true);
        assert_eq!(
            s,
            Split {
                agency: 120,
                host: 79
            }
        );
        assert_eq!(on_sale(1999, 1000, 4000, false), Split { agency: 199, host: 0 });
    }

    #[test]
    fn partial_refunds_add_up_to_the_commission_on_what_was_kept() {
        let (amount, pct, share) = (9_999, 1_250, 3_333);
        let refunds = [1, 998, 3_000, 2_500];
        let mut total = on_sale(amount, pct, share, true);
        let mut before = 0;
        for r in refunds {
            let c = clawback(amount, before, r, pct, share, true);
            assert!(c.agency <= 0 && c.host <= 0);
            total.agency += c.agency;
            total.host += c.host;
            before += r;
        }
        assert_eq!(total, on_sale(amount - before, pct, share, true));
    }

    #[test]
    fn a_full_refund_claws_everything_back() {
        let sale = on_sale(5_000, 1_000, 5_000, true);
        let c = clawback(5_000, 0, 5_000, 1_000, 5_000, true);
        assert_eq!(sale.total() + c.total(), 0);
        assert_eq!(sale.host + c.host, 0);
    }

    #[test]
    fn hourly_pay_is_pro_rata_by_the_second() {
        assert_eq!(hourly(3_000, 3_600), 3_000);
        assert_eq!(hourly(3_000, 5_400), 4_500);
        assert_eq!(hourly(1_000, 1), 0);
        assert_eq!(hourly(3_600, 1), 1);
    }

    #[test]
    fn the_slot_fee_shares_by_time_on_air_and_adds_up() {
        let (a, b, c) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        let (agency, hosts) = slot_fee(10_000, 5_000, &[(a, 3_600), (b, 3_600), (c, 3_600)]);
        // 5,000 for the hosts: 1,666.67 each → 1,667 + 1,667 + 1,666.
        assert_eq!(agency, 5_000);
        assert_eq!(hosts.iter().map(|h| h.1).sum::<i64>(), 5_000);
        assert!(hosts.iter().all(|h| h.1 == 1_666 || h.1 == 1_667));
        let (agency, hosts) = slot_fee(10_000, 5_000, &[]);
        assert_eq!((agency, hosts.len()), (10_000, 0));
    }
}
