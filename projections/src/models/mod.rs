//! The projections: each module owns its tables and their `apply`.

use crate::Projection;

/// Every projection, in a fixed order.
pub static ALL: &[Projection] = &[];
