//! Placeholder, filled by its slice.
