//! The `[live]` section of the configuration.

use serde::Deserialize;

/// Settings of auctions and giveaways.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LiveConfig {
    /// How often each node looks for auctions and giveaways due to end or draw (ms).
    pub tick_ms: u64,
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig { tick_ms: 250 }
    }
}
