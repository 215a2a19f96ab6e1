//! The rules of bidding, as pure functions of their inputs: the increment
//! table, the minimum acceptable bid, and how a bid (exact or maximum)
//! changes the standing price and leader. The batcher applies [`resolve`] to
//! each bid in the auction's global order; anyone can replay the published
//! bid log with the same function and get the same hammer price.

use serde::{Deserialize, Serialize};

/// One line of an increment table: below `below_minor` (exclusive), bids go
/// up by `step_minor`; the last line has no bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Increment {
    /// The price this step applies below; null (or absent) on the last line.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100_000_000)]
    pub below_minor: Option<i64>,
    /// The step, minor units (at least 1).
    #[schema(minimum = 1, maximum = 100_000_000)]
    pub step_minor: i64,
}

/// A validated increment table: thresholds strictly ascending, the last
/// line open, every step positive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Increments(Vec<Increment>);

/// Why an increment table is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadIncrements(pub &'static str);

impl Increments {
    /// Checks a table: 1 to 20 lines, positive steps, positive strictly
    /// ascending thresholds, only the last line without one.
    pub fn parse(lines: Vec<Increment>) -> Result<Increments, BadIncrements> {
        if lines.is_empty() || lines.len() > 20 {
            return Err(BadIncrements("the increment table has 1 to 20 lines"));
        }
        let mut previous = 0i64;
        for (i, line) in lines.iter().enumerate() {
            if line.step_minor < 1 {
                return Err(BadIncrements("every step_minor is at least 1"));
            }
            let last = i + 1 == lines.len();
            match (line.below_minor, last) {
                (None, true) => {}
                (None, false) => return Err(BadIncrements("only the last line has no below_minor")),
                (Some(_), true) => return Err(BadIncrements("the last line has no below_minor")),
                (Some(below), false) => {
                    if below <= previous {
                        return Err(BadIncrements("below_minor thresholds are positive and ascending"));
                    }
                    previous = below;
                }
            }
        }
        Ok(Increments(lines))
    }

    /// A single step for every price.
    pub fn flat(step_minor: i64) -> Increments {
        Increments(vec![Increment {
            below_minor: None,
            step_minor: step_minor.max(1),
        }])
    }

    /// The step at `price`.
    pub fn step_at(&self, price: i64) -> i64 {
        self.0
            .iter()
            .find(|l| l.below_minor.is_none_or(|b| price < b))
            .map_or(1, |l| l.step_minor)
    }

    pub fn lines(&self) -> &[Increment] {
        &self.0
    }
}

/// The standing state of an auction, as far as bidding is concerned.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Standing {
    /// The current price and leader; `None` before the first bid.
    pub leader: Option<Leader>,
}

/// The current leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    pub bidder: String,
    pub price_minor: i64,
    /// The leader's maximum (secret while the auction runs).
    pub max_minor: i64,
}

/// The fixed terms bidding needs.
#[derive(Debug, Clone)]
pub struct Terms {
    pub start_minor: i64,
    pub increments: Increments,
    /// The reserve: once a leader's maximum meets it, the price is at least it.
    pub reserve_minor: Option<i64>,
}

/// A bid as asked: an exact amount, a maximum, or both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    pub bidder: String,
    pub amount_minor: Option<i64>,
    pub max_minor: Option<i64>,
}

/// What became of a bid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Accepted: recorded in the log at this amount and maximum.
    Accepted {
        amount_minor: i64,
        max_minor: i64,
        /// The minimum acceptable bid when it was accepted.
        min_minor: i64,
        /// The bidder leads after it.
        leading: bool,
        /// The leader before the bid, if another bidder lost the lead to it.
        outbid: Option<String>,
    },
    /// Below the minimum acceptable bid (`min_minor`).
    TooLow { min_minor: i64 },
    /// A maximum below the amount, or an amount that is not positive.
    Malformed(&'static str),
    /// The leader bid without raising their maximum.
    AlreadyLeading { max_minor: i64 },
}

impl Terms {
    /// The minimum acceptable bid in `standing`: the start price before the
    /// first bid, then the price plus the step at that price.
    pub fn min_bid(&self, standing: &Standing) -> i64 {
        match &standing.leader {
            None => self.start_minor,
            Some(l) => l
                .price_minor
                .saturating_add(self.increments.step_at(l.price_minor)),
        }
    }

    /// The price a standing maximum answers a challenger's `challenge` with:
    /// one step above it, but never above the maximum.
    fn answer(&self, max_minor: i64, challenge: i64) -> i64 {
        challenge
            .saturating_add(self.increments.step_at(challenge))
            .min(max_minor)
    }

    /// The price at least the reserve once the leader's maximum meets it.
    fn with_reserve(&self, price: i64, max_minor: i64) -> i64 {
        match self.reserve_minor {
            Some(r) if price < r && max_minor >= r => r,
            _ => price,
        }
    }
}

/// Applies one bid to `standing` (eBay and Whatnot rules):
/// - an ask carries an amount (default: the minimum acceptable bid) and a
///   maximum (default: the amount); the amount must be at least the minimum
///   acceptable bid, else [`Resolution::TooLow`];
/// - the leader's own bid only raises their maximum (the price stays);
/// - a challenger whose maximum exceeds the leader's takes the lead at the
///   larger of their amount and one step above the old maximum (capped at
///   their own maximum);
/// - otherwise the leader keeps the lead and their proxy answers at one step
///   above the challenger's maximum, capped at the leader's maximum; equal
///   maxima go to the earlier bid, which is the leader's;
/// - once the leader's maximum meets the reserve, the price is at least
///   the reserve.
pub fn resolve(terms: &Terms, standing: &mut Standing, ask: &Ask) -> Resolution {
    let min_minor = terms.min_bid(standing);
    let amount = ask.amount_minor.unwrap_or(min_minor);
    let max = ask.max_minor.unwrap_or(amount);
    if amount < 1 {
        return Resolution::Malformed("amounts are positive");
    }
    if max < amount {
        return match ask.amount_minor {
            // A maximum alone, below the minimum acceptable bid.
            None => Resolution::TooLow { min_minor },
            Some(_) => Resolution::Malformed("max_minor is at least amount_minor"),
        };
    }
    match standing.leader.as_mut() {
        Some(leader) if leader.bidder == ask.bidder => {
            if max <= leader.max_minor {
                return Resolution::AlreadyLeading {
                    max_minor: leader.max_minor,
                };
            }
            if amount < min_minor {
                return Resolution::TooLow { min_minor };
            }
            leader.max_minor = max;
            // An exact amount above the price sets it (the leader asked to pay it).
            let price = if ask.amount_minor.is_some() {
                amount.max(leader.price_minor)
            } else {
                leader.price_minor
            };
            leader.price_minor = terms.with_reserve(price, max);
            Resolution::Accepted {
                amount_minor: amount,
                max_minor: max,
                min_minor,
                leading: true,
                outbid: None,
            }
        }
        _ if amount < min_minor => Resolution::TooLow { min_minor },
        None => {
            standing.leader = Some(Leader {
                bidder: ask.bidder.clone(),
                price_minor: terms.with_reserve(amount, max),
                max_minor: max,
            });
            Resolution::Accepted {
                amount_minor: amount,
                max_minor: max,
                min_minor,
                leading: true,
                outbid: None,
            }
        }
        Some(leader) if max > leader.max_minor => {
            let price = amount.max(terms.answer(max, leader.max_minor));
            let outbid = std::mem::replace(
                leader,
                Leader {
                    bidder: ask.bidder.clone(),
                    price_minor: terms.with_reserve(price, max),
                    max_minor: max,
                },
            );
            Resolution::Accepted {
                amount_minor: amount,
                max_minor: max,
                min_minor,
                leading: true,
                outbid: Some(outbid.bidder),
            }
        }
        Some(leader) => {
            let price = terms.answer(leader.max_minor, max).max(amount);
            leader.price_minor = terms.with_reserve(price, leader.max_minor);
            Resolution::Accepted {
                amount_minor: amount,
                max_minor: max,
                min_minor,
                leading: false,
                outbid: None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Increments {
        // +1.00 below 20.00, +2.00 below 50.00, +5.00 above.
        Increments::parse(vec![
            Increment {
                below_minor: Some(2000),
                step_minor: 100,
            },
            Increment {
                below_minor: Some(5000),
                step_minor: 200,
            },
            Increment {
                below_minor: None,
                step_minor: 500,
            },
        ])
        .expect("valid table")
    }

    fn terms(reserve: Option<i64>) -> Terms {
        Terms {
            start_minor: 1000,
            increments: table(),
            reserve_minor: reserve,
        }
    }

    fn ask(bidder: &str, amount: Option<i64>, max: Option<i64>) -> Ask {
        Ask {
            bidder: bidder.into(),
            amount_minor: amount,
            max_minor: max,
        }
    }

    #[test]
    fn increment_tables_are_validated() {
        let line = |below, step| Increment {
            below_minor: below,
            step_minor: step,
        };
        assert!(Increments::parse(vec![]).is_err());
        assert!(
            Increments::parse(vec![line(Some(10), 1)]).is_err(),
            "last line open"
        );
        assert!(Increments::parse(vec![line(None, 1), line(None, 2)]).is_err());
        assert!(Increments::parse(vec![line(Some(50), 1), line(Some(20), 2), line(None, 5)]).is_err());
        assert!(Increments::parse(vec![line(Some(20), 1), line(Some(20), 2), line(None, 5)]).is_err());
        assert!(Increments::parse(vec![line(None, 0)]).is_err());
        assert!(Increments::parse(vec![line(Some(0), 1), line(None, 1)]).is_err());
        let t = table();
        assert_eq!(
            (t.step_at(1999), t.step_at(2000), t.step_at(4999), t.step_at(5000)),
            (100, 200, 200, 500)
        );
    }

    /// (asks in acceptance order, expected (leader, price) after each, and
    /// whether each was accepted or the minimum it was refused under).
    struct Case {
        name: &'static str,
        reserve: Option<i64>,
        asks: Vec<(Ask, Result<bool, i64>, &'static str, i64)>,
    }

    #[test]
    fn bids_resolve_as_documented() {
        let cases = vec![
            Case {
                name: "exact bids climb by the table",
                reserve: None,
                asks: vec![
                    (ask("a", Some(1000), None), Ok(true), "a", 1000),
                    (ask("b", Some(1100), None), Ok(true), "b", 1100),
                    (ask("a", Some(1150), None), Err(1200), "b", 1100),
                    (ask("a", None, None), Ok(true), "a", 1200),
                    (ask("b", Some(2000), None), Ok(true), "b", 2000),
                    (ask("c", Some(2100), None), Err(2200), "b", 2000),
                ],
            },
            Case {
                name: "a proxy answers exact bids one step above, up to its maximum",
                reserve: None,
                asks: vec![
                    (ask("p", None, Some(3000)), Ok(true), "p", 1000),
                    (ask("x", Some(1500), None), Ok(false), "p", 1600),
                    (ask("x", Some(2900), None), Ok(false), "p", 3000),
                    (ask("x", Some(3200), None), Ok(true), "x", 3200),
                ],
            },
            Case {
                name: "two proxies racing: the higher maximum wins at one step above the lower",
                reserve: None,
                asks: vec![
                    (ask("p", None, Some(2500)), Ok(true), "p", 1000),
                    (ask("q", None, Some(4000)), Ok(true), "q", 2700),
                    (ask("p", None, Some(4500)), Ok(true), "p", 4200),
                    (ask("q", None, Some(6000)), Ok(true), "q", 4700),
                ],
            },
            Case {
                name: "equal maxima: the earlier bid keeps the lead at that maximum",
                reserve: None,
                asks: vec![
                    (ask("p", None, Some(3000)), Ok(true), "p", 1000),
                    (ask("q", None, Some(3000)), Ok(false), "p", 3000),
                    (ask("r", Some(3200), Some(3200)), Ok(true), "r", 3200),
                ],
            },
            Case {
                name: "the leader raising their maximum keeps the price",
                reserve: None,
                asks: vec![
                    (ask("p", None, Some(1500)), Ok(true), "p", 1000),
                    (ask("p", None, Some(5000)), Ok(true), "p", 1000),
                    (ask("p", None, Some(4000)), Err(-1), "p", 1000),
                    (ask("q", None, Some(4900)), Ok(false), "p", 5000),
                ],
            },
            Case {
                name: "a maximum that meets the reserve lifts the price to it",
                reserve: Some(2500),
                asks: vec![
                    (ask("p", None, Some(2000)), Ok(true), "p", 1000),
                    (ask("q", None, Some(3000)), Ok(true), "q", 2500),
                    (ask("r", Some(2600), None), Err(2700), "q", 2500),
                    (ask("r", Some(2700), None), Ok(false), "q", 2900),
                ],
            },
            Case {
                name: "below the start price is too low",
                reserve: None,
                asks: vec![
                    (ask("a", Some(999), None), Err(1000), "", 0),
                    (ask("a", None, Some(999)), Err(1000), "", 0),
                ],
            },
        ];
        for case in cases {
            let terms = terms(case.reserve);
            let mut standing = Standing::default();
            for (i, (a, expected, leader, price)) in case.asks.iter().enumerate() {
                let got = resolve(&terms, &mut standing, a);
                let what = format!("{}: ask #{i} {a:?} -> {got:?}", case.name);
                match (expected, &got) {
                    (Ok(leading), Resolution::Accepted { leading: l, .. }) => {
                        assert_eq!(leading, l, "{what}")
                    }
                    (Err(-1), Resolution::AlreadyLeading { .. }) => {}
                    (Err(min), Resolution::TooLow { min_minor }) => assert_eq!(min, min_minor, "{what}"),
                    _ => panic!("{what}: expected {expected:?}"),
                }
                match &standing.leader {
                    Some(l) => assert_eq!((l.bidder.as_str(), l.price_minor), (*leader, *price), "{what}"),
                    None => assert_eq!(*leader, "", "{what}"),
                }
            }
        }
    }

    #[test]
    fn no_accepted_bid_is_below_the_price_it_met_and_the_price_never_falls() {
        let terms = terms(Some(3000));
        let mut standing = Standing::default();
        let mut last = 0;
        for i in 0..2000i64 {
            let bidder = format!("u{}", i % 7);
            let a = match i % 3 {
                0 => ask(&bidder, None, Some(1000 + (i * 37) % 9000)),
                1 => ask(&bidder, Some(1000 + (i * 13) % 9000), None),
                _ => ask(&bidder, None, None),
            };
            let before = standing.leader.as_ref().map_or(0, |l| l.price_minor);
            if let Resolution::Accepted {
                amount_minor,
                min_minor,
                ..
            } = resolve(&terms, &mut standing, &a)
            {
                assert!(amount_minor >= min_minor && amount_minor > before);
            }
            let l = standing.leader.as_ref().expect("a leader");
            assert!(l.price_minor >= last && l.price_minor <= l.max_minor);
            last = l.price_minor;
        }
    }
}
