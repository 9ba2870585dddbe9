//! Device drivers.
