//! Memory management: the translation-table manager, the kernel's virtual layout, physical
//! frames and the kernel heap.
//!
//! Owns every translation table and every physical frame. May call `arch` for barriers and
//! TLB maintenance; nothing here knows about threads.
pub mod buddy;
#[cfg(target_os = "none")]
pub mod frame;
pub mod heap;
#[cfg(target_os = "none")]
pub mod kspace;
pub mod layout;
pub mod page_table;
pub mod regions;
pub mod slab;
