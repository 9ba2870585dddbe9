// Boot entry for the primary and secondary CPUs.
//
// Position independent until the MMU is on: it drops from EL3/EL2 to EL1, builds the
// boot translation tables for wherever the image was loaded (the kernel image mapped page
// by page at its link address in the TTBR1 half, text RX, rodata R, data/bss RW; plus an
// identity map of the 2 MiB block holding this code, for the instant the MMU turns on),
// enables the MMU and jumps to Rust in the upper half. Rust extends these same tables.

.equ PAGE_SHIFT,    12
.equ DESC_TABLE,    0x3
.equ DESC_PAGE,     0x3
.equ DESC_BLOCK,    0x1
.equ DESC_AF,       (1 << 10)
.equ DESC_SH_INNER, (3 << 8)
.equ DESC_AP_RO,    (1 << 7)
.equ DESC_PXN,      (1 << 53)
.equ DESC_UXN,      (1 << 54)
.equ ATTR_NORMAL,   (0 << 2)
.equ PAGE_NORMAL,   (DESC_PAGE | DESC_AF | DESC_SH_INNER | ATTR_NORMAL)
.equ PAGE_TEXT,     (PAGE_NORMAL | DESC_AP_RO | DESC_UXN)
.equ PAGE_RODATA,   (PAGE_NORMAL | DESC_AP_RO | DESC_UXN | DESC_PXN)
.equ PAGE_DATA,     (PAGE_NORMAL | DESC_UXN | DESC_PXN)
.equ BLOCK_ID,      (DESC_BLOCK | DESC_AF | DESC_SH_INNER | ATTR_NORMAL | DESC_UXN)

// MAIR: 0 normal WB RA/WA, 1 device nGnRE, 2 normal non-cacheable, 3 device nGnRnE.
.equ MAIR_VALUE,    0x004404FF
// TCR: T0SZ=T1SZ=16 (48-bit), 4 KiB granules, inner-shareable write-back walks; IPS set at run time.
.equ TCR_VALUE,     ((16 << 0) | (1 << 8) | (1 << 10) | (3 << 12) | (0 << 14) | (16 << 16) | (1 << 24) | (1 << 26) | (3 << 28) | (2 << 30))
// SCTLR_EL1: RES1 bits, MMU, D-cache, SP alignment check, I-cache.
.equ SCTLR_EL1_OFF, 0x30D00800
.equ SCTLR_EL1_ON,  (SCTLR_EL1_OFF | (1 << 0) | (1 << 2) | (1 << 3) | (1 << 12))

.section .text.head, "ax"
.global _start
// arm64 Linux Image header: QEMU's Linux loader, U-Boot `booti` and the Pi firmware read it.
_start:
    b       primary_entry               // code0
    .long   0                           // code1
    .quad   0x80000                     // text_offset
    .quad   _image_size                 // image_size, bss included
    .quad   0xa                         // flags: little-endian, 4 KiB pages, anywhere in RAM
    .quad   0, 0, 0                     // reserved
    .ascii  "ARM\x64"                   // magic
    .long   0                           // reserved

.section .text.boot, "ax"
primary_entry:
    msr     daifset, #0xf
    // Some loaders (QEMU booting at EL3 with no firmware) start every CPU here. Only the
    // CPU with affinity 0.0.0 boots; the others park until PSCI or a spin table would
    // start them properly, which such a machine cannot do, so they stay parked.
    mrs     x9, mpidr_el1
    and     x9, x9, #0xffffff
    cbz     x9, 1f
0:  wfe
    b       0b
1:  mov     x19, x0                     // DTB physical address (0 on an ELF boot)
    bl      drop_to_el1
    adr     x20, _start                 // where the image was loaded

    // Zero .bss: the boot tables and boot stack live there.
    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
1:  cmp     x1, x2
    b.hs    2f
    stp     xzr, xzr, [x1], #16
    b       1b
2:
    bl      build_boot_tables
    bl      enable_mmu
    ldr     x1, =primary_high
    br      x1

// Secondary CPUs arrive here from PSCI CPU_ON or the spin table, MMU off, at EL2 or EL1.
.global secondary_entry
secondary_entry:
    msr     daifset, #0xf
    mov     x19, x0                     // context: CPU index
    bl      drop_to_el1
    bl      enable_mmu
    ldr     x1, =secondary_high
    br      x1

// Leaves the CPU at EL1h with interrupts masked, whatever EL it entered at.
drop_to_el1:
    mrs     x9, CurrentEL
    lsr     x9, x9, #2
    cmp     x9, #3
    b.ne    1f
    // EL3 with no firmware: stay in the Secure state (lower ELs AArch64) and go straight
    // to EL1. Non-secure code could not configure the interrupt controller (interrupt
    // groups are the firmware's), and there is no firmware here to do it.
    mov     x10, #(1 << 10)
    msr     scr_el3, x10
    mov     x10, #0x3c5                 // EL1h, DAIF masked
    msr     spsr_el3, x10
    adr     x10, 2f
    msr     elr_el3, x10
    eret
1:  mrs     x9, CurrentEL
    lsr     x9, x9, #2
    cmp     x9, #2
    b.ne    2f
    // EL2: EL1 is AArch64, may use the physical timer and counter, no FP traps.
    mov     x10, #(1 << 31)
    msr     hcr_el2, x10
    mrs     x10, cnthctl_el2
    orr     x10, x10, #3
    msr     cnthctl_el2, x10
    msr     cntvoff_el2, xzr
    mov     x10, #0x33ff
    msr     cptr_el2, x10
    msr     hstr_el2, xzr
    // With a GICv3 CPU interface, EL1 may use its system registers (ICC_SRE_EL2.Enable|SRE);
    // otherwise EL1's first ICC_SRE_EL1 access would trap to an EL2 with no handler.
    mrs     x10, id_aa64pfr0_el1
    ubfx    x10, x10, #24, #4
    cbz     x10, 3f
    mrs     x10, S3_4_C12_C9_5          // ICC_SRE_EL2
    mov     x11, #0x9                   // SRE | Enable
    orr     x10, x10, x11
    msr     S3_4_C12_C9_5, x10
    isb
3:
    ldr     x10, =SCTLR_EL1_OFF
    msr     sctlr_el1, x10
    mov     x10, #0x3c5                 // EL1h, DAIF masked
    msr     spsr_el2, x10
    adr     x10, 2f
    msr     elr_el2, x10
    eret
2:  ret

// x20 = image load PA. Fills boot_l0_hi..boot_l3_hi and boot_l0_id..boot_l2_id.
build_boot_tables:
    // Upper half: L0[511] -> L1, L1[510] -> L2, L2[0..2] -> L3 pages of the image.
    adrp    x0, boot_l0_hi
    adrp    x1, boot_l1_hi
    orr     x2, x1, #DESC_TABLE
    str     x2, [x0, #(511 * 8)]
    adrp    x0, boot_l2_hi
    orr     x2, x0, #DESC_TABLE
    str     x2, [x1, #(510 * 8)]
    adrp    x1, boot_l3_hi
    orr     x2, x1, #DESC_TABLE
    str     x2, [x0]
    add     x1, x1, #4096
    orr     x2, x1, #DESC_TABLE
    str     x2, [x0, #8]

    // Pages: one L3 entry per 4 KiB, attributes by section.
    adrp    x0, boot_l3_hi              // x0: L3 entry cursor
    adrp    x1, __kernel_start          // x1: PA cursor
    adrp    x3, __text_end
    adrp    x4, __rodata_end
    adrp    x5, __kernel_end
    ldr     x6, =PAGE_TEXT
    ldr     x7, =PAGE_RODATA
    ldr     x8, =PAGE_DATA
3:  cmp     x1, x5
    b.hs    6f
    mov     x2, x6
    cmp     x1, x3
    b.lo    5f
    mov     x2, x7
    cmp     x1, x4
    b.lo    5f
    mov     x2, x8
5:  orr     x2, x2, x1
    str     x2, [x0], #8
    add     x1, x1, #4096
    b       3b
6:
    // Identity map of the 2 MiB block holding this code, for turning the MMU on.
    adr     x1, enable_mmu
    adrp    x0, boot_l0_id
    adrp    x2, boot_l1_id
    lsr     x9, x1, #39
    and     x9, x9, #511
    orr     x10, x2, #DESC_TABLE
    str     x10, [x0, x9, lsl #3]
    adrp    x0, boot_l2_id
    lsr     x9, x1, #30
    and     x9, x9, #511
    orr     x10, x0, #DESC_TABLE
    str     x10, [x2, x9, lsl #3]
    lsr     x9, x1, #21
    and     x9, x9, #511
    lsr     x10, x1, #21
    lsl     x10, x10, #21
    ldr     x11, =BLOCK_ID
    orr     x10, x10, x11
    str     x10, [x0, x9, lsl #3]
    dsb     ishst
    ret

// Turns the MMU on with the boot tables; returns still running at the identity address.
enable_mmu:
    ldr     x9, =MAIR_VALUE
    msr     mair_el1, x9
    ldr     x9, =TCR_VALUE
    mrs     x10, id_aa64mmfr0_el1
    and     x10, x10, #0x7              // PARange -> TCR.IPS
    cmp     x10, #5
    mov     x11, #5
    csel    x10, x10, x11, ls           // at most 48 bits of PA with 4 KiB granules
    orr     x9, x9, x10, lsl #32
    msr     tcr_el1, x9
    adrp    x9, boot_l0_id
    msr     ttbr0_el1, x9
    adrp    x9, boot_l0_hi
    msr     ttbr1_el1, x9
    isb
    tlbi    vmalle1
    dsb     nsh
    isb
    ldr     x9, =SCTLR_EL1_ON
    msr     sctlr_el1, x9
    isb
    ret

.section .text
primary_high:
    adrp    x1, __boot_stack_top
    add     x1, x1, :lo12:__boot_stack_top
    mov     sp, x1
    mov     x29, xzr
    mov     x30, xzr
    mov     x0, x19
    mov     x1, x20
    bl      kernel_entry
3:  wfe
    b       3b

secondary_high:
    ldr     x1, =SECONDARY_BOOT_SP
    ldr     x1, [x1]
    mov     sp, x1
    mov     x29, xzr
    mov     x30, xzr
    mov     x0, x19
    bl      secondary_kernel_entry
4:  wfe
    b       4b

// The boot stack is the upper half of a 32 KiB-aligned window, like an exception stack,
// so the vector entry's check (bit 14 of SP, vectors.s) passes for an exception taken on it
// early in boot instead of calling it an exception-stack overflow; the lower half holds
// boot tables (16 KiB of them), and running into them fails the check as an overflow should.
.section .bss.page_aligned, "aw", @nobits
.balign 32768
.global boot_l0_hi
boot_l0_hi: .space 4096
boot_l1_hi: .space 4096
boot_l2_hi: .space 4096
boot_l0_id: .space 4096
.global boot_stack
boot_stack: .space 16384
.global __boot_stack_top
__boot_stack_top:
boot_l3_hi: .space 8192                 // the image may be up to 4 MiB
boot_l1_id: .space 4096
boot_l2_id: .space 4096
