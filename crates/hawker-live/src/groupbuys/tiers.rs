//! A group buy's price tiers: pure rules, no I/O.
//!
//! Tiers are by participants (distinct buyers, whatever their quantities):
//! the first starts at 1 participant, each next one needs more participants
//! and costs less. The tier in force is the last one whose
//! `min_participants` the group reached; when the group buy succeeds,
//! every participant pays that tier's price, whenever they joined.

use serde::{Deserialize, Serialize};

/// Most tiers in a group buy.
pub const MAX_TIERS: usize = 10;

/// One price tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// From this many participants on (the first tier: 1).
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub min_participants: i32,
    /// The unit price in this tier, minor units.
    #[schema(minimum = 1, maximum = 100_000_000)]
    pub price_minor: i64,
}

/// Why a tier table is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadTiers(pub &'static str);

/// Checked tiers: 1 to [`MAX_TIERS`], the first from 1 participant,
/// thresholds strictly rising, prices strictly falling, each price 1 to
/// `max_price`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tiers(Vec<Tier>);

impl Tiers {
    pub fn parse(tiers: Vec<Tier>, max_price: i64) -> Result<Tiers, BadTiers> {
        if tiers.is_empty() || tiers.len() > MAX_TIERS {
            return Err(BadTiers("tiers must hold 1 to 10 tiers"));
        }
        if tiers[0].min_participants != 1 {
            return Err(BadTiers("the first tier starts at min_participants 1"));
        }
        for t in &tiers {
            if !(1..=max_price).contains(&t.price_minor) {
                return Err(BadTiers("each price_minor is 1 to commerce.max_price_minor"));
            }
            if !(1..=1_000_000).contains(&t.min_participants) {
                return Err(BadTiers("each min_participants is 1 to 1000000"));
            }
        }
        for pair in tiers.windows(2) {
            if pair[1].min_participants <= pair[0].min_participants {
                return Err(BadTiers("min_participants must rise from tier to tier"));
            }
            if pair[1].price_minor >= pair[0].price_minor {
                return Err(BadTiers("price_minor must fall from tier to tier"));
            }
        }
        Ok(Tiers(tiers))
    }

    pub fn lines(&self) -> &[Tier] {
        &self.0
    }

    /// The index of the tier in force with `participants` (the first tier
    /// when there are none yet).
    pub fn index_for(&self, participants: i32) -> usize {
        self.0
            .iter()
            .rposition(|t| t.min_participants <= participants)
            .unwrap_or(0)
    }

    /// The tier in force with `participants`.
    pub fn tier_for(&self, participants: i32) -> Tier {
        self.0[self.index_for(participants)]
    }

    /// The next tier to unlock, if any.
    pub fn next_after(&self, participants: i32) -> Option<Tier> {
        self.0.iter().copied().find(|t| t.min_participants > participants)
    }

    /// The lowest price any participant could pay (the last tier's).
    pub fn lowest_price(&self) -> i64 {
        self.0.last().map_or(0, |t| t.price_minor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(min_participants: i32, price_minor: i64) -> Tier {
        Tier {
            min_participants,
            price_minor,
        }
    }

    fn pdd() -> Tiers {
        Tiers::parse(vec![t(1, 3000), t(10, 2500), t(50, 2000)], 100_000_000).unwrap()
    }

    #[test]
    fn the_tier_in_force_is_the_last_one_reached() {
        let tiers = pdd();
        for (participants, price) in [
            (0, 3000),
            (1, 3000),
            (9, 3000),
            (10, 2500),
            (49, 2500),
            (50, 2000),
            (5000, 2000),
        ] {
            assert_eq!(
                tiers.tier_for(participants).price_minor,
                price,
                "{participants} participants"
            );
        }
        assert_eq!(tiers.next_after(9), Some(t(10, 2500)));
        assert_eq!(tiers.next_after(50), None);
        assert_eq!(tiers.lowest_price(), 2000);
    }

    #[test]
    fn a_tier_table_that_is_not_rising_in_size_and_falling_in_price_is_refused() {
        let max = 100_000;
        for (tiers, why) in [
            (vec![], "tiers must hold 1 to 10 tiers"),
            (
                (1..=11).map(|i| t(i, 1000 - i64::from(i))).collect(),
                "tiers must hold 1 to 10 tiers",
            ),
            (vec![t(2, 100)], "the first tier starts at min_participants 1"),
            (
                vec![t(1, 100), t(1, 90)],
                "min_participants must rise from tier to tier",
            ),
            (
                vec![t(1, 100), t(5, 100)],
                "price_minor must fall from tier to tier",
            ),
            (
                vec![t(1, 100), t(5, 120)],
                "price_minor must fall from tier to tier",
            ),
            (vec![t(1, 0)], "each price_minor is 1 to commerce.max_price_minor"),
            (
                vec![t(1, max + 1)],
                "each price_minor is 1 to commerce.max_price_minor",
            ),
            (
                vec![t(1, 100), t(2_000_000, 90)],
                "each min_participants is 1 to 1000000",
            ),
        ] {
            assert_eq!(Tiers::parse(tiers.clone(), max), Err(BadTiers(why)), "{tiers:?}");
        }
        assert!(Tiers::parse(vec![t(1, 100)], max).is_ok());
    }
}
