// Exception vectors. Assembled by vectors.rs, which supplies every operand in braces below
// from Rust: the trap frame's size and field offsets (TrapFrame in trap.rs), the ESR fields, and the
// exception-stack check bit (mm::layout).
//
// Threads run at EL1t on SP_EL0, so their exceptions arrive in the "current EL with SP0"
// group and the CPU has already switched to SP_EL1, this CPU's exception stack. Exceptions
// taken while on the exception stack arrive in the "current EL with SPx" group. Both push
// the same TrapFrame and call exception_dispatch(frame, kind); a context switch happens by
// rewriting the frame, which exception_return then restores.
//
// Vector 0 (a thread's synchronous exception) first sends a data abort at EL1 to the stack
// growth fast path (stack_grow_fast, src/stack/fast.rs), which handles a growth of the
// current thread's stack by itself and erets, or comes back to thread_sync_full with every
// register as it found it (x0 in TPIDR_EL0): the full frame and today's dispatch.
//
// Before pushing, the other entries check that the frame fits on the exception stack: each
// stack is the upper half of a window twice its size whose lower half is unmapped, so bit
// {STACK_CHECK_BIT} of a valid SP is set. If it is clear, a nested fault has run the stack
// out: switch to this CPU's emergency stack and report, instead of faulting forever. Every
// stack SP_EL1 can be on is laid out that way: the exception stacks, the emergency stacks
// (mm/layout.rs) and the boot stack CPU 0 starts on (boot.s). Vector 0
// needs no check: a thread runs only once every frame on its CPU's exception stack has been
// popped (exception_return, enter_first_frame), so an exception from a thread always finds
// that stack empty.

// Pushes the TrapFrame (x0 is in TPIDR_EL0, SP already checked) and dispatches.
.macro PUSH_FRAME_AND_DISPATCH kind
    mrs     x0, tpidr_el0
    sub     sp, sp, #{FRAME_SIZE}
    stp     x0, x1, [sp, #{FRAME_X} + 16 * 0]
    stp     x2, x3, [sp, #{FRAME_X} + 16 * 1]
    stp     x4, x5, [sp, #{FRAME_X} + 16 * 2]
    stp     x6, x7, [sp, #{FRAME_X} + 16 * 3]
    stp     x8, x9, [sp, #{FRAME_X} + 16 * 4]
    stp     x10, x11, [sp, #{FRAME_X} + 16 * 5]
    stp     x12, x13, [sp, #{FRAME_X} + 16 * 6]
    stp     x14, x15, [sp, #{FRAME_X} + 16 * 7]
    stp     x16, x17, [sp, #{FRAME_X} + 16 * 8]
    stp     x18, x19, [sp, #{FRAME_X} + 16 * 9]
    stp     x20, x21, [sp, #{FRAME_X} + 16 * 10]
    stp     x22, x23, [sp, #{FRAME_X} + 16 * 11]
    stp     x24, x25, [sp, #{FRAME_X} + 16 * 12]
    stp     x26, x27, [sp, #{FRAME_X} + 16 * 13]
    stp     x28, x29, [sp, #{FRAME_X} + 16 * 14]
    mrs     x0, sp_el0
    stp     x30, x0, [sp, #{FRAME_X} + 16 * 15]    // x30, then sp_el0 (asserted in trap.rs)
    mrs     x0, elr_el1
    mrs     x1, spsr_el1
    stp     x0, x1, [sp, #{FRAME_ELR}]             // elr, then spsr
    mov     x0, sp
    mov     x1, #\kind
    mov     x29, xzr                    // backtraces of the handler end here
    bl      exception_dispatch
    b       exception_return
.endm

.macro SAVE_AND_DISPATCH kind
    msr     tpidr_el0, x0               // scratch: there is no EL0 here
    mov     x0, sp
    sub     x0, x0, #{FRAME_SIZE}
    tbz     x0, #{STACK_CHECK_BIT}, exception_stack_overflow
    PUSH_FRAME_AND_DISPATCH \kind
.endm

.macro VENTRY kind
// .org fails to assemble if the previous entry ran past its 0x80 bytes.
.org exception_vectors + \kind * 0x80
    SAVE_AND_DISPATCH \kind
.endm

.section .text.vectors, "ax"
.balign 0x800
.global exception_vectors
exception_vectors:
// current EL, SP0 (a thread): synchronous. Exactly 32 instructions: the slot is full.
.org exception_vectors + 0 * 0x80
    msr     tpidr_el0, x0               // scratch: there is no EL0 here
    mrs     x0, esr_el1
    lsr     x0, x0, #{ESR_EC_SHIFT}
    cmp     x0, #{EC_DATA_ABORT_SAME_EL}
    b.eq    stack_grow_fast             // returns itself, or comes back just below
.global thread_sync_full
thread_sync_full:
    PUSH_FRAME_AND_DISPATCH 0
    VENTRY 1    //                             IRQ
    VENTRY 2    //                             FIQ
    VENTRY 3    //                             SError
    VENTRY 4    // current EL, SPx (exception stack): synchronous
    VENTRY 5    //                                    IRQ
    VENTRY 6    //                                    FIQ
    VENTRY 7    //                                    SError
    VENTRY 8    // lower EL, AArch64 (there is no EL0 code): synchronous
    VENTRY 9
    VENTRY 10
    VENTRY 11
    VENTRY 12   // lower EL, AArch32
    VENTRY 13
    VENTRY 14
    VENTRY 15

.section .text
// Restores the TrapFrame at SP and returns from the exception.
.global exception_return
exception_return:
    ldp     x0, x1, [sp, #{FRAME_ELR}]
    msr     elr_el1, x0
    msr     spsr_el1, x1
    ldp     x30, x0, [sp, #{FRAME_X} + 16 * 15]
    msr     sp_el0, x0
    ldp     x0, x1, [sp, #{FRAME_X} + 16 * 0]
    ldp     x2, x3, [sp, #{FRAME_X} + 16 * 1]
    ldp     x4, x5, [sp, #{FRAME_X} + 16 * 2]
    ldp     x6, x7, [sp, #{FRAME_X} + 16 * 3]
    ldp     x8, x9, [sp, #{FRAME_X} + 16 * 4]
    ldp     x10, x11, [sp, #{FRAME_X} + 16 * 5]
    ldp     x12, x13, [sp, #{FRAME_X} + 16 * 6]
    ldp     x14, x15, [sp, #{FRAME_X} + 16 * 7]
    ldp     x16, x17, [sp, #{FRAME_X} + 16 * 8]
    ldp     x18, x19, [sp, #{FRAME_X} + 16 * 9]
    ldp     x20, x21, [sp, #{FRAME_X} + 16 * 10]
    ldp     x22, x23, [sp, #{FRAME_X} + 16 * 11]
    ldp     x24, x25, [sp, #{FRAME_X} + 16 * 12]
    ldp     x26, x27, [sp, #{FRAME_X} + 16 * 13]
    ldp     x28, x29, [sp, #{FRAME_X} + 16 * 14]
    add     sp, sp, #{FRAME_SIZE}
    eret

// The exception stack is exhausted. x0 is lost (it is in tpidr_el0). Switch to the
// emergency stack (found through TPIDR_EL1: this CPU's PerCpu block, in percpu.rs).
exception_stack_overflow:
    mrs     x0, tpidr_el1
    ldr     x0, [x0, #{PERCPU_EMERGENCY_SP}]
    mov     sp, x0
    mov     x29, xzr
    mrs     x0, tpidr_el0
    mrs     x1, esr_el1
    mrs     x2, far_el1
    mrs     x3, elr_el1
    bl      exception_stack_overflowed
1:  wfe
    b       1b

// Starts running the TrapFrame `x0` on this CPU: the frame is copied to the top of the
// exception stack `x1` and restored as if returning from an exception. Used to enter the
// first thread on each CPU.
.global enter_first_frame
enter_first_frame:
    sub     sp, x1, #{FRAME_SIZE}
    mov     x2, sp
    add     x5, x0, #{FRAME_SIZE}
1:  ldp     x3, x4, [x0], #16
    stp     x3, x4, [x2], #16
    cmp     x0, x5
    b.lo    1b
    b       exception_return
