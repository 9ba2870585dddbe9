//! Memory management.
