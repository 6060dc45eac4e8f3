//! Ids and idempotency keys derived from the demo seed and a label, so a
//! second run (or a resumed one) names the same clinics, patients and
//! reservations, and every POST carries a key that makes its retry safe.

use uuid::Uuid;

/// A random-looking (version 4) UUID that depends only on `seed` and
/// `label`: the same pair gives the same id on every run.
pub(super) fn demo_id(seed: u64, label: &str) -> Uuid {
    let mut rng = fastrand::Rng::with_seed(seed ^ fnv1a(label));
    uuid::Builder::from_random_bytes(rng.u128(..).to_le_bytes()).into_uuid()
}

/// The `Idempotency-Key` of the POST labelled `label` in the run with `seed`.
pub(super) fn key(seed: u64, label: &str) -> String {
    format!("demo-{seed}-{label}")
}

/// 64-bit FNV-1a: a stable hash (std's hasher may change between releases).
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_depend_on_seed_and_label_only() {
        assert_eq!(demo_id(7, "clinic/potsdam"), demo_id(7, "clinic/potsdam"));
        assert_ne!(demo_id(7, "clinic/potsdam"), demo_id(8, "clinic/potsdam"));
        assert_ne!(demo_id(7, "clinic/potsdam"), demo_id(7, "clinic/berlin"));
        assert_eq!(demo_id(7, "x").get_version_num(), 4);
    }
}
