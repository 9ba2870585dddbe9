// Boot entry for the primary and secondary CPUs.
//
// Position independent until the MMU is on: it drops from EL3/EL2 to EL1, builds the
// boot translation tables for wherever the image was loaded (the kernel image mapped page
// by page at its link address in the TTBR1 half, text RX, rodata R, data/bss RW; plus an
// identity map of the 2 MiB block holding this code, for the instant the MMU turns on),
// enables the MMU and jumps to Rust in the upper half. Rust extends these same tables.

// Every operand in braces comes from Rust (boot.rs): the MMU registers' values and the boot
// descriptors from mm::page_table, the EL3/EL2 set-up values from aarch64-cpu's fields.

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
    // CPU with affinity 0.0.0.0 boots; the others park until PSCI or a spin table would
    // start them properly, which such a machine cannot do, so they stay parked.
    mrs     x9, mpidr_el1
    ldr     x10, ={MPIDR_AFFINITY}
    and     x9, x9, x10
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
    mov     x10, #{SCR_EL3_VALUE}
    msr     scr_el3, x10
    mov     x10, #{SPSR_EL1H_MASKED}    // EL1h, DAIF masked
    msr     spsr_el3, x10
    adr     x10, 2f
    msr     elr_el3, x10
    eret
1:  mrs     x9, CurrentEL
    lsr     x9, x9, #2
    cmp     x9, #2
    b.ne    2f
    // EL2: EL1 is AArch64, may use the physical timer and counter, no FP traps.
    mov     x10, #{HCR_EL2_VALUE}
    msr     hcr_el2, x10
    mrs     x10, cnthctl_el2
    orr     x10, x10, #{CNTHCTL_EL1_ACCESS}
    msr     cnthctl_el2, x10
    msr     cntvoff_el2, xzr
    mov     x10, #{CPTR_EL2_VALUE}
    msr     cptr_el2, x10
    msr     hstr_el2, xzr
    // With a GICv3 CPU interface, EL1 may use its system registers (ICC_SRE_EL2.Enable|SRE);
    // otherwise EL1's first ICC_SRE_EL1 access would trap to an EL2 with no handler.
    mrs     x10, id_aa64pfr0_el1
    ubfx    x10, x10, #{PFR0_GIC_SHIFT}, #4
    cbz     x10, 3f
    mrs     x10, S3_4_C12_C9_5          // ICC_SRE_EL2
    mov     x11, #{ICC_SRE_EL2_EL1_ACCESS}
    orr     x10, x10, x11
    msr     S3_4_C12_C9_5, x10
    isb
3:
    ldr     x10, ={SCTLR_MMU_OFF}
    msr     sctlr_el1, x10
    mov     x10, #{SPSR_EL1H_MASKED}    // EL1h, DAIF masked
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
    orr     x2, x1, #{TABLE_BITS}
    str     x2, [x0, #(511 * 8)]
    adrp    x0, boot_l2_hi
    orr     x2, x0, #{TABLE_BITS}
    str     x2, [x1, #(510 * 8)]
    adrp    x1, boot_l3_hi
    orr     x2, x1, #{TABLE_BITS}
    str     x2, [x0]
    add     x1, x1, #{PAGE_SIZE}
    orr     x2, x1, #{TABLE_BITS}
    str     x2, [x0, #8]

    // Pages: one L3 entry per 4 KiB, attributes by section.
    adrp    x0, boot_l3_hi              // x0: L3 entry cursor
    adrp    x1, __kernel_start          // x1: PA cursor
    adrp    x3, __text_end
    adrp    x4, __rodata_end
    adrp    x5, __kernel_end
    ldr     x6, ={PAGE_TEXT}
    ldr     x7, ={PAGE_RODATA}
    ldr     x8, ={PAGE_DATA}
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
    add     x1, x1, #{PAGE_SIZE}
    b       3b
6:
    // Identity map of the 2 MiB block holding this code, for turning the MMU on.
    adr     x1, enable_mmu
    adrp    x0, boot_l0_id
    adrp    x2, boot_l1_id
    lsr     x9, x1, #39
    and     x9, x9, #511
    orr     x10, x2, #{TABLE_BITS}
    str     x10, [x0, x9, lsl #3]
    adrp    x0, boot_l2_id
    lsr     x9, x1, #30
    and     x9, x9, #511
    orr     x10, x0, #{TABLE_BITS}
    str     x10, [x2, x9, lsl #3]
    lsr     x9, x1, #21
    and     x9, x9, #511
    lsr     x10, x1, #21
    lsl     x10, x10, #21
    ldr     x11, ={BLOCK_ID}
    orr     x10, x10, x11
    str     x10, [x0, x9, lsl #3]
    dsb     ishst
    ret

// Turns the MMU on with the boot tables; returns still running at the identity address.
enable_mmu:
    ldr     x9, ={MAIR}
    msr     mair_el1, x9
    ldr     x9, ={TCR}
    mrs     x10, id_aa64mmfr0_el1
    and     x10, x10, #{PARANGE_MASK}   // PARange -> TCR.IPS
    cmp     x10, #{TCR_IPS_MAX}
    mov     x11, #{TCR_IPS_MAX}
    csel    x10, x10, x11, ls           // at most 48 bits of PA with 4 KiB granules
    orr     x9, x9, x10, lsl #{TCR_IPS_SHIFT}
    msr     tcr_el1, x9
    adrp    x9, boot_l0_id
    msr     ttbr0_el1, x9
    adrp    x9, boot_l0_hi
    msr     ttbr1_el1, x9
    isb
    tlbi    vmalle1
    dsb     nsh
    isb
    ldr     x9, ={SCTLR_MMU_ON}
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
boot_l3_hi: .space {BOOT_L3_BYTES}     // the image may be up to __boot_map_size bytes
boot_l1_id: .space 4096
boot_l2_id: .space 4096

// The bytes boot_l3_hi maps, for the linker script's check that the image fits.
.global __boot_map_size
.set __boot_map_size, {BOOT_MAP_SIZE}
