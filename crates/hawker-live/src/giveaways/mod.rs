//! Provably fair giveaways (being built: see issue 16).

use hawker_hub::{CommandContext, Enter, EnterReply};

use crate::{Error, Live, Result};

/// `giveaway.enter` from a socket.
pub(crate) async fn socket_enter(_live: &Live, _ctx: &CommandContext, _enter: Enter) -> Result<EnterReply> {
    Err(Error::NotFound("giveaway"))
}
