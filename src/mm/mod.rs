//! Memory management: the translation-table manager, the kernel's virtual layout, physical
//! frames and the kernel heap.
//!
//! Owns every translation table and every physical frame. May call `arch` for barriers and
//! TLB maintenance; nothing here knows about threads.
pub mod layout;
pub mod page_table;
