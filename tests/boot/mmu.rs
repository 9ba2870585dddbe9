//! The live translation tables on the real MMU: map, unmap, W^X, the linear map, and
//! the invalidation of every CPU's TLB.
use super::*;

// -------------------------------------------------------------------------------------------
// Page tables on the real MMU

/// Maps a fresh frame at a scratch address, writes through it and reads back through the
/// linear map (and the other way round); kspace::query and the MMU (AT S1E1R) agree; then
/// unmaps it, gets the frame back through the callback, and a touch afterwards faults with a
/// translation fault naming the exact address.
pub(crate) fn map_write_query_unmap() -> TestResult {
    let va = SCRATCH_VA;
    check!(
        kspace::query(va).is_none() && kspace::query(va + PAGE).is_none(),
        "the scratch range {:#x} is already mapped",
        va
    );
    let pa = frame::alloc_zeroed().ok_or("no frame")?;
    let r = kspace::map(va, pa, PAGE, Attributes::DATA, false);
    check!(r.is_ok(), "map failed: {:?}", r);
    let t = kspace::query(va + 0x238).ok_or("query finds nothing after map")?;
    check!(
        t.pa == pa + 0x238,
        "query: pa {:#x}, mapped {:#x}",
        t.pa,
        pa + 0x238
    );
    check!(t.level == 3, "a 4 KiB map became a level-{} entry", t.level);
    check!(
        t.attributes == Attributes::DATA && t.writable() && !t.executable(),
        "query: attributes {:?} writable {} executable {}",
        t.attributes,
        t.writable(),
        t.executable()
    );
    check!(
        at_translate(va + 0x238, false) == Ok(pa + 0x238),
        "the MMU translates {:#x} to {:?}, the tables say {:#x}",
        va + 0x238,
        at_translate(va + 0x238, false),
        pa + 0x238
    );
    check!(
        at_translate(va + 0x238, true) == Ok(pa + 0x238),
        "the MMU refuses a write to the RW mapping: {:?}",
        at_translate(va + 0x238, true)
    );
    // Through the new mapping, back through the linear map, and the other way.
    for i in 0..(PAGE / 8) {
        raw_write(va + i * 8, 0xc0ff_ee00_0000_0000 ^ (i * 0x1_0001));
    }
    let lin = phys_to_virt(pa);
    for i in 0..(PAGE / 8) {
        let got = raw_read(lin + i * 8);
        check!(
            got == 0xc0ff_ee00_0000_0000 ^ (i * 0x1_0001),
            "word {} reads {:#x} through the linear map",
            i,
            got
        );
    }
    raw_write(lin + 0x100, 0x1234_5678_9abc_def0);
    check!(
        raw_read(va + 0x100) == 0x1234_5678_9abc_def0,
        "a write through the linear map is not seen through the new mapping"
    );
    // Unmap: the callback gets exactly this page.
    let mut seen = Vec::new();
    let r = kspace::unmap(va, PAGE, |v, p| seen.push((v, p)));
    check!(r.is_ok(), "unmap failed: {:?}", r);
    check!(
        seen.len() == 1 && seen[0] == (va, pa),
        "unmap reported {:?}, expected [({:#x}, {:#x})]",
        seen,
        va,
        pa
    );
    check!(
        kspace::query(va).is_none(),
        "query still finds the page after unmap"
    );
    check!(
        at_translate(va, false).is_err(),
        "the MMU still translates {:#x} after unmap",
        va
    );
    // This CPU's TLB held the entry (it was just used): touching it must fault now.
    let far = va + 0x238;
    let run = run_expecting_fault("touch-unmapped", move || {
        raw_read(far);
    })?;
    frame::free(pa, 1);
    check_data_abort(&run, far, false, true)
}

/// Refused requests return the right error and change nothing.
pub(crate) fn map_errors_change_nothing() -> TestResult {
    let va = SCRATCH_VA + 16 * PAGE;
    check!(
        kspace::query(va).is_none(),
        "scratch {:#x} already mapped",
        va
    );
    let pa = frame::alloc_zeroed().ok_or("no frame")?;
    let pa2 = frame::alloc_zeroed().ok_or("no frame")?;
    let r = kspace::map(va, pa, PAGE, Attributes::DATA, false);
    check!(r.is_ok(), "map failed: {:?}", r);
    let mut result: TestResult = Ok(());
    let mut fail = |m: String| {
        if result.is_ok() {
            result = Err(m);
        }
    };
    match kspace::map(va, pa2, PAGE, Attributes::DATA, false) {
        Err(MapError::AlreadyMapped { va: v }) if v == va => {}
        other => fail(format!("mapping over a mapped page: {:?}", other)),
    }
    match kspace::map(va - PAGE, pa2, 2 * PAGE, Attributes::DATA, false) {
        Err(MapError::AlreadyMapped { va: v }) if v == va => {}
        other => fail(format!("a range overlapping a mapped page: {:?}", other)),
    }
    if kspace::query(va - PAGE).is_some() {
        fail(String::from("a refused map left the page before it mapped"));
    }
    match kspace::map(va + PAGE + 8, pa2, PAGE, Attributes::DATA, false) {
        Err(MapError::Unaligned { .. }) => {}
        other => fail(format!("unaligned va: {:?}", other)),
    }
    match kspace::map(va + PAGE, pa2 + 8, PAGE, Attributes::DATA, false) {
        Err(MapError::Unaligned { .. }) => {}
        other => fail(format!("unaligned pa: {:?}", other)),
    }
    match kspace::map(0x4000_0000, pa2, PAGE, Attributes::DATA, false) {
        Err(MapError::OutOfRange { .. }) => {}
        other => fail(format!(
            "a lower-half address in the kernel tables: {:?}",
            other
        )),
    }
    match kspace::map(
        va + PAGE,
        pa2,
        PAGE,
        Attributes::new(MemoryType::Device, Permission::ReadExecute),
        false,
    ) {
        Err(MapError::ExecutableDevice) => {}
        other => fail(format!("executable device memory: {:?}", other)),
    }
    match kspace::unmap(va + PAGE, PAGE, |_, _| {}) {
        Err(MapError::NotMapped { va: v }) if v == va + PAGE => {}
        other => fail(format!("unmapping an unmapped page: {:?}", other)),
    }
    match kspace::unmap(va, 2 * PAGE, |_, _| {}) {
        Err(MapError::NotMapped { .. }) => {}
        other => fail(format!("unmapping a range with a hole: {:?}", other)),
    }
    match kspace::query(va) {
        Some(t) if t.pa == pa && t.attributes == Attributes::DATA => {}
        other => fail(format!(
            "after the refused requests the page reads {:?}",
            other
        )),
    }
    if kspace::query(va + PAGE).is_some() {
        fail(String::from("a refused request mapped the page after"));
    }
    let r = kspace::unmap(va, PAGE, |_, _| {});
    if r.is_err() {
        fail(format!("final unmap: {:?}", r));
    }
    frame::free(pa, 1);
    frame::free(pa2, 1);
    result
}

/// A read-only mapping can be read, and a write to it is a permission fault (WnR set, exact
/// FAR) that ends only the writing thread.
pub(crate) fn read_only_mapping_enforced() -> TestResult {
    let va = SCRATCH_VA + 32 * PAGE;
    check!(
        kspace::query(va).is_none(),
        "scratch {:#x} already mapped",
        va
    );
    let pa = frame::alloc_zeroed().ok_or("no frame")?;
    raw_write(phys_to_virt(pa) + 0x40, 0xfeed_f00d);
    let ro = Attributes::new(MemoryType::Normal, Permission::ReadOnly);
    let r = kspace::map(va, pa, PAGE, ro, false);
    check!(r.is_ok(), "map failed: {:?}", r);
    let t = kspace::query(va).ok_or("not mapped")?;
    let mut result = (|| {
        check!(
            !t.writable() && !t.executable() && t.attributes == ro,
            "read-only mapping decodes as {:?}",
            t.attributes
        );
        check!(
            raw_read(va + 0x40) == 0xfeed_f00d,
            "read through the RO mapping"
        );
        check!(
            at_translate(va, true).is_err(),
            "the MMU allows a write to the read-only page"
        );
        let far = va + 0x48;
        let run = run_expecting_fault("write-ro", move || raw_write(far, 1))?;
        check_data_abort(&run, far, true, false)?;
        check!(
            raw_read(phys_to_virt(pa) + 0x48) == 0,
            "the refused write reached memory"
        );
        Ok(())
    })();
    if let Err(e) = kspace::unmap(va, PAGE, |_, _| {}) {
        result = result.and(Err(format!("unmap: {}", e)));
    }
    frame::free(pa, 1);
    result
}

/// After an unmap, no CPU may still translate the page through a stale TLB entry: a thread
/// pinned to each CPU reads the page (filling that CPU's TLB), then after the unmap a thread
/// pinned to each CPU touches it again, and every one of them must fault.
pub(crate) fn unmap_invalidates_every_cpu() -> TestResult {
    let va = SCRATCH_VA + 48 * PAGE;
    check!(
        kspace::query(va).is_none(),
        "scratch {:#x} already mapped",
        va
    );
    let pa = frame::alloc_zeroed().ok_or("no frame")?;
    raw_write(phys_to_virt(pa), 0x7777);
    let r = kspace::map(va, pa, PAGE, Attributes::DATA, false);
    check!(r.is_ok(), "map failed: {:?}", r);
    let n = sched::online_count();
    let policy = stack::default_policy();
    // Warm every CPU's TLB.
    let warmed = Arc::new(AtomicU64::new(0));
    let mut hs = Vec::new();
    for cpu in 0..n {
        let w = warmed.clone();
        let h = sched::spawn_pinned("tlb-warm", policy, cpu, move || {
            for _ in 0..100 {
                if raw_read(va) == 0x7777 {
                    w.fetch_or(1 << percpu::cpu_index(), Ordering::SeqCst);
                }
            }
        });
        hs.push(h.map_err(|e| format!("spawn_pinned: {}", e))?);
    }
    for h in hs {
        h.join();
    }
    let warmed = warmed.load(Ordering::SeqCst);
    let r = kspace::unmap(va, PAGE, |_, _| {});
    check!(r.is_ok(), "unmap failed: {:?}", r);
    // Touch from every CPU again; each toucher records where it ran and whether it survived.
    let ran_on = Arc::new(AtomicU64::new(0));
    let survivors = Arc::new(AtomicU64::new(0));
    let mut hs = Vec::new();
    for cpu in 0..n {
        let on = ran_on.clone();
        let s = survivors.clone();
        let h = sched::spawn_pinned("tlb-touch", policy, cpu, move || {
            on.fetch_or(1 << percpu::cpu_index(), Ordering::SeqCst);
            raw_read(va + 0x10);
            s.fetch_add(1, Ordering::SeqCst);
        });
        hs.push(h.map_err(|e| format!("spawn_pinned: {}", e))?);
    }
    for h in hs {
        h.join();
    }
    frame::free(pa, 1);
    let all = (1u64 << n) - 1;
    check!(
        warmed == all,
        "pinned readers saw the mapped page on CPUs {:#b}, expected {:#b}",
        warmed,
        all
    );
    check!(
        survivors.load(Ordering::SeqCst) == 0,
        "{} of {} CPUs still read the page after it was unmapped (stale TLB entry)",
        survivors.load(Ordering::SeqCst),
        n
    );
    check!(
        ran_on.load(Ordering::SeqCst) == all,
        "pinned touchers ran on CPUs {:#b}, expected {:#b}",
        ran_on.load(Ordering::SeqCst),
        all
    );
    let (_, esr, far) = last_fault();
    check!(
        esr_ec(esr) == EC_DABT_SAME_EL && is_translation_fault(esr) && far == va + 0x10,
        "last fault ESR {:#x} FAR {:#x}, expected a translation fault at {:#x}",
        esr,
        far,
        va + 0x10
    );
    Ok(())
}

/// Decoded straight from the raw descriptor bits (not through Translation's helpers).
pub(crate) fn desc_writable(d: u64) -> bool {
    d & (1 << 7) == 0 // AP[2] clear: read-write
}

pub(crate) fn desc_el1_executable(d: u64) -> bool {
    // PXN clear, and not writable at EL0 (which implies PXN).
    d & (1 << 53) == 0 && !(d & (1 << 6) != 0 && d & (1 << 7) == 0)
}

/// W^X over the whole live kernel address space: no mapping is writable and executable, none
/// is reachable from EL0, only kernel text is executable, text is executable and read-only,
/// rodata is read-only and not executable, data/bss is writable and not executable, and no
/// writable mapping aliases the physical pages of kernel text.
pub(crate) fn wx_on_live_tables() -> TestResult {
    let (ts, te) = text_range();
    let (rs, re) = rodata_range();
    let (ds, de) = data_range();
    check!(
        ts < te && te <= rs && rs < re && re <= ds && ds < de,
        "odd image layout: text {:#x}..{:#x} rodata {:#x}..{:#x} data {:#x}..{:#x}",
        ts,
        te,
        rs,
        re,
        ds,
        de
    );
    let text_pa = kspace::image_va_to_pa(ts);
    let text_pa_end = text_pa + (te - ts);
    let mut leaves = 0u64;
    let mut first_problem: Option<String> = None;
    let mut note = |p: String| {
        if first_problem.is_none() {
            first_problem = Some(p);
        }
    };
    kspace::walk(|va, t| {
        leaves += 1;
        let d = t.descriptor;
        let end = va + t.size();
        if desc_writable(d) && desc_el1_executable(d) {
            note(format!(
                "{:#x} (level {}) is writable and executable: {:#x}",
                va, t.level, d
            ));
        }
        if t.writable() && t.executable() {
            note(format!(
                "{:#x}: Translation says writable and executable",
                va
            ));
        }
        if d & (1 << 6) != 0 {
            note(format!("{:#x} is accessible from EL0: {:#x}", va, d));
        }
        if d & (1 << 54) == 0 {
            note(format!(
                "{:#x} is executable at EL0 (UXN clear): {:#x}",
                va, d
            ));
        }
        if desc_el1_executable(d) && (va < ts || end > te) {
            note(format!(
                "{:#x}..{:#x} is executable but not kernel text",
                va, end
            ));
        }
        if va < te && end > ts && (desc_writable(d) || !desc_el1_executable(d)) {
            note(format!(
                "text at {:#x} is not read-only executable: {:#x}",
                va, d
            ));
        }
        if va < re && end > rs && (desc_writable(d) || desc_el1_executable(d)) {
            note(format!("rodata at {:#x} is not read-only: {:#x}", va, d));
        }
        if va < de && end > ds && (!desc_writable(d) || desc_el1_executable(d)) {
            note(format!(
                "data at {:#x} is not read-write no-exec: {:#x}",
                va, d
            ));
        }
        if desc_writable(d) && t.pa < text_pa_end && t.pa + t.size() > text_pa {
            note(format!(
                "{:#x} is a writable alias of kernel text (pa {:#x})",
                va, t.pa
            ));
        }
    });
    if let Some(p) = first_problem {
        return Err(p);
    }
    check!(leaves > 0, "the walk found no mapping at all");
    // Every page of each section is mapped (the walk above only sees what exists).
    for (name, s, e) in [("text", ts, te), ("rodata", rs, re), ("data", ds, de)] {
        let mut va = s & !(PAGE - 1);
        while va < e {
            check!(
                kspace::query(va).is_some(),
                "{} page {:#x} is not mapped",
                name,
                va
            );
            va += PAGE;
        }
    }
    Ok(())
}

/// The MMU itself (AT S1E1W, then real writes) refuses writes to kernel text and rodata and
/// allows them to data; a write to text and one to rodata each end only the writing thread
/// with a permission fault at the exact address.
pub(crate) fn image_protection_in_hardware() -> TestResult {
    let (ts, te) = text_range();
    let (rs, re) = rodata_range();
    let (ds, de) = data_range();
    let mut va = ts;
    while va < re {
        check!(
            at_translate(va, false).is_ok(),
            "{:#x} in the image cannot be read",
            va
        );
        match at_translate(va, true) {
            Err(par) => check!(
                par_fst(par) & 0x3c == 0x0c,
                "AT S1E1W on {:#x}: FST {:#x} is not a permission fault",
                va,
                par_fst(par)
            ),
            Ok(_) => {
                return Err(format!(
                    "the MMU allows writes to {} page {:#x}",
                    if va < te { "text" } else { "rodata" },
                    va
                ))
            }
        }
        va += PAGE;
    }
    let mut va = ds;
    while va < de {
        check!(
            at_translate(va, true).is_ok(),
            "the MMU refuses writes to data page {:#x}",
            va
        );
        va += PAGE;
    }
    static READ_ONLY_WORD: u64 = 0x0bad_cafe;
    let ro = &READ_ONLY_WORD as *const u64 as u64;
    check!(
        ro >= rs && ro < re,
        "the test's static {:#x} is not in rodata {:#x}..{:#x}",
        ro,
        rs,
        re
    );
    let run = run_expecting_fault("write-rodata", move || raw_write(ro, 1))?;
    check_data_abort(&run, ro, true, false)?;
    check!(
        // SAFETY: reading a static.
        unsafe { core::ptr::read_volatile(&READ_ONLY_WORD) } == 0x0bad_cafe,
        "the refused write changed rodata"
    );
    let code = raw_read as *const () as u64;
    check!(
        code >= ts && code < te,
        "raw_read {:#x} is not in text",
        code
    );
    let before = raw_read(code);
    let run = run_expecting_fault("write-text", move || raw_write(code + 8, 0))?;
    check_data_abort(&run, code + 8, true, false)?;
    check!(raw_read(code) == before, "the refused write changed text");
    Ok(())
}

/// The linear map covers every page of RAM but the image at LINEAR_BASE + pa, with RW
/// no-exec normal memory, and uses block mappings: every 2 MiB-aligned 2 MiB of RAM clear of
/// the image is one block (level 1 or 2), and only a few pages are mapped page by page.
pub(crate) fn linear_map_blocks() -> TestResult {
    let m = &boot_info().machine;
    let (img_s, img_e) = image_pa();
    let mut blocks_checked = 0;
    let mut giant = 0;
    for r in &m.memory {
        let end = r.base + r.size;
        let mut chunk = layout::align_up(r.base, MIB2);
        while chunk + MIB2 <= end {
            if chunk + MIB2 <= img_s || chunk >= img_e {
                let va = phys_to_virt(chunk);
                let t = kspace::query(va + 0x1000)
                    .ok_or_else(|| format!("linear map misses pa {:#x}", chunk))?;
                check!(
                    t.level <= 2,
                    "pa {:#x}..{:#x} is mapped with level-{} entries, not a block",
                    chunk,
                    chunk + MIB2,
                    t.level
                );
                check!(
                    t.pa == chunk + 0x1000,
                    "linear va {:#x} -> pa {:#x}",
                    va,
                    t.pa
                );
                if t.level == 1 {
                    giant += 1;
                }
                blocks_checked += 1;
            }
            chunk += MIB2;
        }
    }
    check!(
        blocks_checked > 0,
        "no 2 MiB of RAM clear of the image to check"
    );
    // Sample every page-ish stride of RAM: mapped at the right place with the right
    // attributes, except the image, which the linear map must not alias.
    let total: u64 = m.memory.iter().map(|r| r.size).sum();
    let stride = layout::align_up((total / 4096).max(PAGE), PAGE) + PAGE;
    for r in &m.memory {
        let mut pa = layout::align_up(r.base, PAGE);
        while pa < r.base + r.size {
            let t = kspace::query(phys_to_virt(pa));
            if pa >= img_s && pa < img_e {
                check!(
                    t.is_none(),
                    "the image's page {:#x} is aliased in the linear map",
                    pa
                );
            } else {
                let t = t.ok_or_else(|| format!("RAM page {:#x} not in the linear map", pa))?;
                check!(
                    t.pa == pa,
                    "linear map: pa {:#x} appears at {:#x}",
                    t.pa,
                    pa
                );
                check!(
                    t.attributes == Attributes::DATA,
                    "linear map of {:#x}: {:?}",
                    pa,
                    t.attributes
                );
                check!(
                    at_translate(phys_to_virt(pa), true) == Ok(pa),
                    "the MMU translates linear {:#x} to {:?}",
                    phys_to_virt(pa),
                    at_translate(phys_to_virt(pa), true)
                );
            }
            pa += stride;
        }
    }
    // Page-granular entries in the linear region: only around the image and odd edges.
    let mut pages = 0u64;
    kspace::walk(|va, t| {
        if (LINEAR_BASE..LINEAR_BASE + LINEAR_SIZE).contains(&va) && t.level == 3 {
            pages += 1;
        }
    });
    let edges = 2 * m.memory.len() as u64 + 2;
    check!(
        pages <= edges * 512,
        "{} 4 KiB pages in the linear map (at most {} expected with blocks; {} blocks of 1 GiB)",
        pages,
        edges * 512,
        giant
    );
    Ok(())
}
