//! Memory management: the translation-table manager, the kernel's virtual layout, physical
//! frames, the kernel heap and the heaps threads may have of their own.
//!
//! Owns every translation table and every physical frame. May call `arch` for barriers and
//! TLB maintenance; nothing here knows about threads, except that the global allocator
//! asks `sched` for the running thread's own heap (`heap`).
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
pub mod thread_heap;
