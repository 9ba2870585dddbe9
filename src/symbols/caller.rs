//! Which frame an allocation failure belongs to.
//!
//! A failed allocation that nobody handles ends in the panic `memory allocation of N bytes
//! failed`, raised deep inside the `alloc` crate (`handle_alloc_error`, `RawVec`'s growth, the
//! panic machinery of `core`). The frame a reader wants is the first one outside all that: the
//! kernel function that asked for the memory. [`first_outside`] walks the return addresses of
//! a backtrace, innermost first, and returns the first whose function [`is_machinery`] does
//! not claim.
//!
//! What counts as machinery goes by the demangled name: `core`, `alloc` and the compiler's
//! shims (`__rust_*`, `__rdl_*`, `__rg_*`, `__rustc::*`, `rust_begin_unwind`), the kernel's
//! global allocator (`dynstack::mm::heap`) and panic handler (`dynstack::kernel::panic`,
//! `dynstack::kernel::stop`, `dynstack::kernel::backtrace`). Generic library code compiled
//! into the kernel keeps its library path (`alloc::raw_vec::RawVec<T,A>::grow_one`,
//! `<alloc::vec::Vec<T> as core::clone::Clone>::clone`), so it is machinery too. A trait
//! method counts as its self type's code when that type is a path
//! (`<dynstack::Foo as core::fmt::Display>::fmt` is the kernel's), and as its trait's code
//! when the self type is a primitive, a reference, a slice or a generic parameter
//! (`<[T] as alloc::slice::hack::ConvertVec>::to_vec` is `alloc`'s). Third-party crates
//! (`serde_json`, `miniz_oxide`) are callers like the kernel.
use super::{Symbol, Table};

/// Paths whose functions are the allocator's or the panic's own: a prefix ending in `::`
/// matches a whole module, any other entry matches that function or crate-level name alone.
const MACHINERY: &[&str] = &[
    "core::",
    "alloc::",
    "__rustc::",
    "rust_begin_unwind",
    "dynstack::mm::heap::",
    "dynstack::kernel::panic",
    "dynstack::kernel::stop::",
    "dynstack::kernel::backtrace::",
];

/// Compiler shims, matched as name prefixes (`__rust_alloc`, `__rdl_oom`, `__rg_oom`, ...).
const SHIMS: &[&str] = &["__rust_", "__rdl_", "__rg_"];

/// Whether `path` (a demangled name, or what follows `<` in one) starts with a machinery path.
fn in_machinery(path: &str) -> bool {
    if SHIMS.iter().any(|s| path.starts_with(s)) {
        return true;
    }
    MACHINERY.iter().any(|m| {
        path.strip_prefix(m).is_some_and(|rest| {
            m.ends_with("::") || rest.is_empty() || rest.starts_with(['<', '>', ' ', ':'])
        })
    })
}

/// Whether the function `name` (demangled, as the table holds it) belongs to the allocator,
/// the `alloc` and `core` crates or the panic path, rather than to the code that allocated.
pub fn is_machinery(name: &str) -> bool {
    let inner = name.trim_start_matches(['<', '&', '*', '[', '(']);
    let inner = inner
        .strip_prefix("mut ")
        .or_else(|| inner.strip_prefix("const "))
        .or_else(|| inner.strip_prefix("dyn "))
        .unwrap_or(inner);
    if in_machinery(inner) {
        return true;
    }
    let self_type = inner
        .split([' ', '<', '>', ',', ';', ']', ')'])
        .next()
        .unwrap_or("");
    if self_type.contains("::") {
        // A type of some crate's own, outside the machinery: that crate's code.
        return false;
    }
    // (A byte search: `str::find` would bring a substring searcher into the kernel for this.)
    match inner.as_bytes().windows(4).position(|w| w == b" as ") {
        // A primitive, a reference, a slice or a generic parameter: the trait says whose.
        Some(at) => in_machinery(inner[at + 4..].trim_start_matches(['<', '&'])),
        // An inherent method of a primitive (`<u128>::fmt`) lives in `core` or `alloc`; a
        // plain name without a path (`memcpy`, an assembly label) is nobody's machinery.
        None => name.starts_with('<'),
    }
}

/// The first of `frames` (return addresses, innermost first) that `table` names with a
/// function outside the machinery, with that function (looked up as a return address,
/// [`Table::lookup_return`]): the caller an allocation failure is reported against.
/// Addresses the table does not name are passed over.
pub fn first_outside<'a>(
    table: &Table<'a>,
    frames: impl IntoIterator<Item = u64>,
) -> Option<(u64, Symbol<'a>)> {
    frames.into_iter().find_map(|addr| {
        let symbol = table.lookup_return(addr)?;
        (!is_machinery(symbol.name)).then_some((addr, symbol))
    })
}

/// The size in an allocation failure's panic message (`memory allocation of N bytes
/// failed`, as `alloc`'s default error handler words it), or `None` for any other message.
pub fn allocation_failure_size(message: &str) -> Option<u64> {
    message
        .strip_prefix("memory allocation of ")?
        .strip_suffix(" bytes failed")?
        .parse()
        .ok()
}
