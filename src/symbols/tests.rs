//! Host tests of the symbol table: the layout `scripts/ksyms.py` writes, lookups at every
//! kind of address, and tables that are damaged in every field (they are input).
use super::caller::{allocation_failure_size, first_outside, is_machinery};
use super::{Symbol, Table, TableError, ENTRY_LEN, HEADER_LEN, MAGIC, VERSION};
use crate::rng::XorShift;

const BASE: u64 = 0xffff_ffff_8000_0000;
const END: u64 = BASE + 0x1000;

/// A table as `scripts/ksyms.py` writes it: header, entries, NUL-ended names.
fn build(base: u64, end: u64, symbols: &[(u64, &str)]) -> Vec<u8> {
    let mut entries = Vec::new();
    let mut names = Vec::new();
    for &(addr, name) in symbols {
        entries.extend_from_slice(&((addr - base) as u32).to_le_bytes());
        entries.extend_from_slice(&(names.len() as u32).to_le_bytes());
        names.extend_from_slice(name.as_bytes());
        names.push(0);
    }
    let mut t = Vec::new();
    t.extend_from_slice(&MAGIC);
    t.extend_from_slice(&VERSION.to_le_bytes());
    t.extend_from_slice(&(symbols.len() as u32).to_le_bytes());
    t.extend_from_slice(&base.to_le_bytes());
    t.extend_from_slice(&end.to_le_bytes());
    t.extend_from_slice(&(names.len() as u32).to_le_bytes());
    t.extend_from_slice(&0u32.to_le_bytes());
    assert_eq!(t.len(), HEADER_LEN);
    t.extend_from_slice(&entries);
    t.extend_from_slice(&names);
    t
}

fn sample() -> Vec<u8> {
    build(
        BASE,
        END,
        &[
            (BASE, "_start"),
            (BASE + 0x40, "dynstack::kernel::kernel_entry"),
            (BASE + 0x200, "<dynstack::Foo as core::fmt::Display>::fmt"),
            (BASE + 0x800, "dynstack::shell::run"),
        ],
    )
}

fn put_u32(t: &mut [u8], at: usize, v: u32) {
    t[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(t: &mut [u8], at: usize, v: u64) {
    t[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn finds_the_function_an_address_lies_in() {
    let bytes = sample();
    let t = Table::parse(&bytes).unwrap();
    assert_eq!(t.len(), 4);
    assert_eq!(t.range(), (BASE, END));
    let s = t.lookup(BASE + 0x40).unwrap();
    assert_eq!(
        s,
        Symbol {
            name: "dynstack::kernel::kernel_entry",
            start: BASE + 0x40,
            offset: 0
        }
    );
    assert_eq!(t.lookup(BASE).unwrap().name, "_start");
    assert_eq!(t.lookup(BASE + 0x3c).unwrap().to_string(), "_start+0x3c");
    assert_eq!(
        t.lookup(BASE + 0x234).unwrap().to_string(),
        "<dynstack::Foo as core::fmt::Display>::fmt+0x34"
    );
    // The last function runs up to the end of the covered range.
    assert_eq!(
        t.lookup(END - 4).unwrap().to_string(),
        "dynstack::shell::run+0x7fc"
    );
}

#[test]
fn addresses_outside_the_range_have_no_name() {
    let bytes = sample();
    let t = Table::parse(&bytes).unwrap();
    assert_eq!(t.lookup(BASE - 4), None);
    assert_eq!(t.lookup(END), None);
    assert_eq!(t.lookup(u64::MAX), None);
    assert_eq!(t.lookup(0), None);
    // Below the first symbol, inside the range.
    let bytes = build(BASE, END, &[(BASE + 0x100, "f")]);
    let t = Table::parse(&bytes).unwrap();
    assert_eq!(t.lookup(BASE + 0xfc), None);
    assert_eq!(t.lookup(BASE + 0x100).unwrap().name, "f");
}

#[test]
fn a_return_address_belongs_to_the_call_before_it() {
    let bytes = sample();
    let t = Table::parse(&bytes).unwrap();
    // A call to a function that never returns, as the last instruction of `_start`: the
    // return address is the next function's first, but the frame is `_start`'s.
    assert_eq!(
        t.lookup(BASE + 0x40).unwrap().name,
        "dynstack::kernel::kernel_entry"
    );
    let s = t.lookup_return(BASE + 0x40).unwrap();
    assert_eq!(s.to_string(), "_start+0x40");
    assert_eq!(
        t.lookup_return(BASE + 0x44).unwrap().to_string(),
        "dynstack::kernel::kernel_entry+0x4"
    );
    assert_eq!(t.lookup_return(BASE), None);
    assert_eq!(t.lookup_return(0), None);
}

#[test]
fn a_padded_section_parses_and_iterates_in_order() {
    let mut bytes = sample();
    bytes.resize(128 << 10, 0);
    let t = Table::parse(&bytes).unwrap();
    let names: Vec<&str> = t.iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        [
            "_start",
            "dynstack::kernel::kernel_entry",
            "<dynstack::Foo as core::fmt::Display>::fmt",
            "dynstack::shell::run"
        ]
    );
    let starts: Vec<u64> = t.iter().map(|s| s.start).collect();
    assert_eq!(starts, [BASE, BASE + 0x40, BASE + 0x200, BASE + 0x800]);
}

#[test]
fn a_table_without_symbols_names_nothing() {
    let bytes = build(BASE, END, &[]);
    let t = Table::parse(&bytes).unwrap();
    assert!(t.is_empty());
    assert_eq!(t.lookup(BASE), None);
    assert_eq!(t.lookup_return(BASE + 8), None);
}

#[test]
fn an_unfilled_section_is_empty_and_garbage_is_not_a_table() {
    assert_eq!(
        Table::parse(&[0u8; 128 << 10]).unwrap_err(),
        TableError::Empty
    );
    assert_eq!(Table::parse(&[]).unwrap_err(), TableError::Truncated);
    assert_eq!(
        Table::parse(&MAGIC[..7]).unwrap_err(),
        TableError::Truncated
    );
    let mut bytes = sample();
    bytes[0] ^= 0x20;
    assert_eq!(Table::parse(&bytes).unwrap_err(), TableError::BadMagic);
    assert_eq!(Table::parse(&MAGIC).unwrap_err(), TableError::Truncated);
}

#[test]
fn another_version_is_refused() {
    let mut bytes = sample();
    put_u32(&mut bytes, 8, VERSION + 1);
    assert_eq!(
        Table::parse(&bytes).unwrap_err(),
        TableError::Version(VERSION + 1)
    );
}

#[test]
fn counts_and_lengths_beyond_the_bytes_are_truncated() {
    let good = sample();
    for (at, value) in [
        (12, 5u32),     // one entry more than there is
        (12, u32::MAX), // count * 8 far beyond the section
        (32, 10_000),   // names beyond the section
        (32, u32::MAX), // the largest name area
    ] {
        let mut bytes = good.clone();
        put_u32(&mut bytes, at, value);
        assert_eq!(
            Table::parse(&bytes).unwrap_err(),
            TableError::Truncated,
            "field at {at} = {value}"
        );
    }
    // Every cut of the table short of its end.
    for len in 0..good.len() {
        assert!(Table::parse(&good[..len]).is_err(), "cut at {len}");
    }
}

#[test]
fn a_bad_range_is_refused() {
    for (base, end) in [(END, BASE), (BASE, BASE), (0, 1 << 33)] {
        let mut bytes = sample();
        put_u64(&mut bytes, 16, base);
        put_u64(&mut bytes, 24, end);
        assert_eq!(
            Table::parse(&bytes).unwrap_err(),
            TableError::BadRange,
            "{base:#x}..{end:#x}"
        );
    }
}

#[test]
fn entries_out_of_order_twice_or_outside_the_range_are_refused() {
    let entry = |i: usize| HEADER_LEN + i * ENTRY_LEN;
    // Swapped, equal, and beyond the range.
    for (i, offset) in [(1, 0x900u32), (2, 0x40), (3, 0x1000), (3, u32::MAX)] {
        let mut bytes = sample();
        put_u32(&mut bytes, entry(i), offset);
        assert_eq!(
            Table::parse(&bytes).unwrap_err(),
            TableError::Unsorted,
            "entry {i} at {offset:#x}"
        );
    }
}

#[test]
fn a_broken_name_is_no_name() {
    let entry = |i: usize| HEADER_LEN + i * ENTRY_LEN;
    let good = sample();
    // Name offset beyond the name area.
    let mut bytes = good.clone();
    put_u32(&mut bytes, entry(1) + 4, 0xffff);
    let t = Table::parse(&bytes).unwrap();
    assert_eq!(t.lookup(BASE + 0x40), None);
    assert_eq!(t.lookup(BASE).unwrap().name, "_start");
    // The last name without its NUL (the name area cut by one byte).
    let mut bytes = good.clone();
    let names_len = u32::from_le_bytes(bytes[32..36].try_into().unwrap());
    put_u32(&mut bytes, 32, names_len - 1);
    let t = Table::parse(&bytes[..good.len() - 1]).unwrap();
    assert_eq!(t.lookup(BASE + 0x800), None);
    assert_eq!(t.lookup(BASE + 0x200).unwrap().offset, 0);
    // Not UTF-8.
    let mut bytes = good.clone();
    let at = bytes.len() - 2;
    bytes[at] = 0xff;
    let t = Table::parse(&bytes).unwrap();
    assert_eq!(t.lookup(BASE + 0x800), None);
    assert_eq!(t.iter().count(), 3);
}

#[test]
fn damaged_tables_never_panic() {
    let good = {
        let mut b = sample();
        b.resize(512, 0);
        b
    };
    let mut rng = XorShift::new(0x6b73_796d);
    let probes = [
        0,
        BASE - 1,
        BASE,
        BASE + 0x41,
        BASE + 0x7ff,
        END - 1,
        END,
        u64::MAX,
    ];
    for _ in 0..20_000 {
        let mut bytes = good.clone();
        for _ in 0..rng.range(1, 6) {
            let at = rng.below(HEADER_LEN + 4 * ENTRY_LEN + 80);
            match rng.below(3) {
                0 => bytes[at] ^= 1 << rng.below(8),
                1 => bytes[at] = rng.next_u64() as u8,
                _ => bytes[at] = 0,
            }
        }
        let len = if rng.below(4) == 0 {
            rng.below(bytes.len())
        } else {
            bytes.len()
        };
        if let Ok(t) = Table::parse(&bytes[..len]) {
            let (base, end) = t.range();
            for addr in probes.iter().copied().chain([base, end, rng.next_u64()]) {
                if let Some(s) = t.lookup(addr) {
                    assert!(s.start <= addr && addr < end && s.start + s.offset == addr);
                }
                let _ = t.lookup_return(addr);
            }
            let _ = t.iter().count();
        }
    }
}

#[test]
fn machinery_is_the_allocator_alloc_core_and_the_panic_path() {
    for name in [
        "core::panicking::panic_fmt",
        "alloc::alloc::handle_alloc_error",
        "alloc::raw_vec::handle_error",
        "alloc::raw_vec::RawVec<T,A>::grow_one",
        "<alloc::raw_vec::RawVecInner>::finish_grow",
        "<alloc::raw_vec::RawVec<u8>>::grow_one",
        "<alloc::vec::Vec<T> as core::clone::Clone>::clone",
        "<[T] as alloc::slice::hack::ConvertVec>::to_vec",
        "<&T as core::fmt::Debug>::fmt",
        "<u128>::_fmt_inner",
        "<T as alloc::vec::spec_from_elem::SpecFromElem>::from_elem",
        "__rustc::rust_begin_unwind",
        "__rustc::__rdl_alloc_error_handler",
        "__rustc::__rust_alloc_error_handler",
        "__rust_alloc",
        "__rdl_oom",
        "__rg_oom",
        "rust_begin_unwind",
        "dynstack::kernel::panic",
        "dynstack::kernel::stop::on_panic",
        "dynstack::kernel::backtrace::print",
        "dynstack::mm::heap::target::grow",
        "<dynstack::mm::heap::target::KernelHeap as core::alloc::global::GlobalAlloc>::alloc",
        "core::ptr::drop_in_place<dynstack::sched::Thread>",
    ] {
        assert!(is_machinery(name), "{name} should be machinery");
    }
    for name in [
        "dynstack::shell::backend::ps",
        "<dynstack::shell::backend::KernelBackend as dynstack::shell::api::Backend>::mem",
        "<dynstack::Foo as core::fmt::Display>::fmt",
        "<&dynstack::Foo as core::fmt::Debug>::fmt",
        "dynstack::kernel::panicky",
        "dynstack::kernel::kernel_entry",
        "dynstack::mm::heapless::f",
        "faults::allocate_impossibly",
        "serde_json::de::from_slice",
        "<u64 as itoa::Unsigned>::fmt",
        "alloca_user::f",
        "memcpy",
        "exception_vectors",
        "",
    ] {
        assert!(!is_machinery(name), "{name} should not be machinery");
    }
}

#[test]
fn the_caller_is_the_first_frame_outside_the_machinery() {
    let bytes = build(
        BASE,
        END,
        &[
            (BASE, "dynstack::kernel::stop::on_panic"),
            (BASE + 0x100, "core::panicking::panic_fmt"),
            (BASE + 0x200, "alloc::alloc::handle_alloc_error"),
            (BASE + 0x300, "alloc::raw_vec::RawVec<T,A>::grow_one"),
            (BASE + 0x400, "dynstack::shell::backend::ps"),
            (BASE + 0x500, "dynstack::shell::run"),
        ],
    );
    let t = Table::parse(&bytes).unwrap();
    let frames = [
        BASE + 0x10,
        0x1234, // not in the table: passed over
        BASE + 0x120,
        BASE + 0x300, // returns into handle_alloc_error (a call as its last instruction)
        BASE + 0x320,
        BASE + 0x448,
        BASE + 0x520,
    ];
    let (addr, s) = first_outside(&t, frames).unwrap();
    assert_eq!(addr, BASE + 0x448);
    assert_eq!(s.to_string(), "dynstack::shell::backend::ps+0x48");
    assert_eq!(first_outside(&t, frames[..5].iter().copied()), None);
    assert_eq!(first_outside(&t, []), None);
}

#[test]
fn the_size_of_an_allocation_failure() {
    assert_eq!(
        allocation_failure_size("memory allocation of 288 bytes failed"),
        Some(288)
    );
    assert_eq!(
        allocation_failure_size("memory allocation of 18446744073709551615 bytes failed"),
        Some(u64::MAX)
    );
    for other in [
        "",
        "memory allocation of bytes failed",
        "memory allocation of -1 bytes failed",
        "memory allocation of 288 bytes failed!",
        "a panic in thread context",
        "capacity overflow",
    ] {
        assert_eq!(allocation_failure_size(other), None, "{other}");
    }
}

/// The writer and the reader agree: `scripts/ksyms.py` builds a table (from names as
/// `llvm-nm -C` prints them, legacy-mangled leftovers and LLVM suffixes included) that
/// `Table::parse` reads back, in order, with readable names.
#[test]
fn the_build_script_writes_what_the_kernel_reads() {
    let scripts = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts");
    let program = format!(
        "import sys; sys.path.insert(0, {scripts:?}); import ksyms\n\
         syms = [({BASE:#x}, 'dynstack::kernel::kernel_entry::h0123456789abcdef'),\n\
                 ({:#x}, '_$LT$dynstack..Foo$u20$as$u20$core..fmt..Display$GT$::fmt::hfedcba9876543210'),\n\
                 ({:#x}, 'alloc::raw_vec::RawVecInner$LT$A$GT$::finish_grow::h322f15160ad42cb4 (.llvm.917130120530181497)'),\n\
                 ({:#x}, 'dynstack::shell::run::{{{{closure}}}}::h0000000000000001')]\n\
         sys.stdout.buffer.write(ksyms.build_table({BASE:#x}, {END:#x}, syms))\n",
        BASE + 0x40,
        BASE + 0x100,
        BASE + 0x200,
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &program])
        .output()
        .expect("python3 runs (make test needs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = Table::parse(&out.stdout).unwrap();
    let names: Vec<(u64, &str)> = t.iter().map(|s| (s.start - BASE, s.name)).collect();
    assert_eq!(
        names,
        [
            (0, "dynstack::kernel::kernel_entry"),
            (0x40, "<dynstack::Foo as core::fmt::Display>::fmt"),
            (0x100, "alloc::raw_vec::RawVecInner<A>::finish_grow"),
            (0x200, "dynstack::shell::run::{{closure}}"),
        ]
    );
    assert_eq!(
        t.lookup(BASE + 0x44).unwrap().to_string(),
        "<dynstack::Foo as core::fmt::Display>::fmt+0x4"
    );
}
