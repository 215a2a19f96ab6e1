//! Who manages a catalog: a brand token for its own brand, and admins.

use hawker_core::error::{Error, Result};
use hawker_core::Claims;
use uuid::Uuid;

/// True for an admin, or a brand token of `brand_id`.
pub fn may_manage(claims: &Claims, brand_id: Uuid) -> bool {
    claims.is_admin() || hawker_agency::access::brand_of(claims) == Some(brand_id)
}

/// Refuses (403) unless the caller manages `brand_id`'s catalog.
pub fn require_brand(claims: &Claims, brand_id: Uuid) -> Result<()> {
    if may_manage(claims, brand_id) {
        Ok(())
    } else {
        Err(Error::forbidden(
            "a brand's catalog is managed by that brand's tokens and admins",
        ))
    }
}
