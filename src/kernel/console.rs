//! The serial console: `print!`/`println!` output and line input for the shell.
//!
//! Owns the console device (a UART driver registered at boot) and the input ring that the
//! UART interrupt fills. Output is serialised by a lock so lines from different CPUs do not
//! interleave; a panic report bypasses the lock if its holder is the CPU that panicked.
//! Calls `sync` and `sched` (to wake the thread waiting for input).
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use crate::sync::IrqMutex;

/// A UART the console can drive.
pub trait ConsoleDevice: Send + Sync {
    /// Sends one byte, waiting for room.
    fn write_byte(&self, byte: u8);
    /// Takes one received byte, if any.
    fn try_read_byte(&self) -> Option<u8>;
    /// Raises an interrupt when input arrives.
    fn enable_input_interrupt(&self);
}

impl ConsoleDevice for crate::drivers::pl011::Pl011 {
    fn write_byte(&self, byte: u8) {
        crate::drivers::pl011::Pl011::write_byte(self, byte)
    }
    fn try_read_byte(&self) -> Option<u8> {
        crate::drivers::pl011::Pl011::try_read_byte(self)
    }
    fn enable_input_interrupt(&self) {
        self.enable_rx_interrupt()
    }
}

impl ConsoleDevice for crate::drivers::bcm2835_aux::MiniUart {
    fn write_byte(&self, byte: u8) {
        crate::drivers::bcm2835_aux::MiniUart::write_byte(self, byte)
    }
    fn try_read_byte(&self) -> Option<u8> {
        crate::drivers::bcm2835_aux::MiniUart::try_read_byte(self)
    }
    fn enable_input_interrupt(&self) {
        self.enable_rx_interrupt()
    }
}

/// Lets the console device interrupt on input (once the interrupt controller routes it).
pub fn enable_input_interrupt() {
    if let Some(dev) = DEVICE.get() {
        dev.enable_input_interrupt();
    }
}

static DEVICE: crate::sync::Once<&'static dyn ConsoleDevice> = crate::sync::Once::new();
static OUTPUT: IrqMutex<()> = IrqMutex::new(());

const INPUT_SIZE: usize = 1024;
static INPUT: IrqMutex<InputRing> = IrqMutex::new(InputRing {
    buf: [0; INPUT_SIZE],
    head: 0,
    len: 0,
});
/// The thread blocked in [`read_byte`], if any.
static READER: AtomicPtr<crate::sched::Thread> = AtomicPtr::new(core::ptr::null_mut());
static DROPPED: AtomicUsize = AtomicUsize::new(0);

struct InputRing {
    buf: [u8; INPUT_SIZE],
    head: usize,
    len: usize,
}

/// Makes `device` the console. Later calls are ignored.
pub fn set_device(device: &'static dyn ConsoleDevice) {
    DEVICE.call_once(|| device);
}

/// Whether a console device exists yet.
pub fn is_ready() -> bool {
    DEVICE.get().is_some()
}

struct Writer<'a>(&'a dyn ConsoleDevice);

impl Write for Writer<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.0.write_byte(b'\r');
            }
            self.0.write_byte(b);
        }
        Ok(())
    }
}

/// Writes formatted text to the console (the body of `print!`).
pub fn write_fmt(args: fmt::Arguments) {
    if let Some(dev) = DEVICE.get() {
        let _guard = OUTPUT.lock();
        let _ = Writer(*dev).write_fmt(args);
    }
}

/// Writes a panic or fatal report: takes the output lock if it can within a short while,
/// and writes anyway if not (its holder may be the CPU that is dying).
pub fn write_fmt_emergency(args: fmt::Arguments) {
    if let Some(dev) = DEVICE.get() {
        let mut guard = None;
        for _ in 0..1_000_000 {
            if let Some(g) = OUTPUT.try_lock() {
                guard = Some(g);
                break;
            }
            core::hint::spin_loop();
        }
        let _ = Writer(*dev).write_fmt(args);
        drop(guard);
    }
}

/// A `core::fmt::Write` sink that prints to the console, for code that takes a writer (the
/// shell). It writes whole lines at once, so a line built from many pieces (a summary line)
/// is never split by a report from another CPU; a partial line (a prompt, the echo of what
/// is typed) goes out at [`flush`], which [`read_byte`] calls before it waits.
pub struct Console;

/// Most bytes of an unfinished line [`Console`] keeps; a longer one goes out in pieces.
const PENDING_MAX: usize = 512;

/// What [`Console`] has been given since its last complete line: a fixed buffer, so that
/// console output needs no memory (the shell must still print when the heap is full).
struct Pending {
    buf: [u8; PENDING_MAX],
    len: usize,
}

impl Pending {
    fn as_str(&self) -> &str {
        // Whole `str`s are appended, so the bytes are always UTF-8.
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }

    /// Appends `s`, or writes what is pending and `s` out now if they do not fit.
    fn push(&mut self, s: &str) {
        if self.len + s.len() > PENDING_MAX {
            write_fmt(format_args!("{}{}", self.as_str(), s));
            self.len = 0;
            return;
        }
        self.buf[self.len..self.len + s.len()].copy_from_slice(s.as_bytes());
        self.len += s.len();
    }
}

static PENDING: IrqMutex<Pending> = IrqMutex::new(Pending {
    buf: [0; PENDING_MAX],
    len: 0,
});

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // The pending lock is held while the lines go out (then the output lock, always in
        // this order), so that pieces from two writers cannot swap places.
        let mut pending = PENDING.lock();
        match s.rfind('\n') {
            Some(end) => {
                write_fmt(format_args!("{}{}", pending.as_str(), &s[..=end]));
                pending.len = 0;
                pending.push(&s[end + 1..]);
            }
            None => pending.push(s),
        }
        Ok(())
    }
}

/// Writes out what [`Console`] holds of an unfinished line.
pub fn flush() {
    let mut pending = PENDING.lock();
    if pending.len > 0 {
        write_fmt(format_args!("{}", pending.as_str()));
        pending.len = 0;
    }
}

/// Moves bytes waiting in the device into the input ring; true if there were any.
fn drain_device() -> bool {
    let Some(dev) = DEVICE.get() else {
        return false;
    };
    let mut got = false;
    let mut ring = INPUT.lock();
    while let Some(b) = dev.try_read_byte() {
        if ring.len == INPUT_SIZE {
            DROPPED.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let tail = (ring.head + ring.len) % INPUT_SIZE;
        ring.buf[tail] = b;
        ring.len += 1;
        got = true;
    }
    got
}

/// Called from the UART interrupt: moves received bytes into the input ring and wakes the
/// reader.
pub fn on_input_interrupt() {
    if drain_device() {
        let reader = READER.load(Ordering::Acquire);
        if !reader.is_null() {
            // SAFETY: the reader is the shell thread, blocked in read_byte; it never exits
            // while registered.
            unsafe { crate::sched::unpark(reader) };
        }
    }
}

fn pop_input() -> Option<u8> {
    let mut ring = INPUT.lock();
    if ring.len == 0 {
        return None;
    }
    let b = ring.buf[ring.head];
    ring.head = (ring.head + 1) % INPUT_SIZE;
    ring.len -= 1;
    Some(b)
}

/// Waits for the next input byte. Only one thread (the shell) reads the console.
pub fn read_byte() -> u8 {
    flush();
    loop {
        if let Some(b) = pop_input() {
            return b;
        }
        READER.store(crate::sched::current_ptr(), Ordering::Release);
        // Bytes that arrived between the check and registering as reader would not wake us,
        // nor would bytes that were already in the FIFO before its interrupt was enabled.
        drain_device();
        if let Some(b) = pop_input() {
            READER.store(core::ptr::null_mut(), Ordering::Release);
            return b;
        }
        crate::sched::park();
        READER.store(core::ptr::null_mut(), Ordering::Release);
    }
}

/// Prints to the console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::kernel::console::write_fmt(format_args!($($arg)*)) };
}

/// Prints a line to the console.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::kernel::console::write_fmt(format_args!("{}\n", format_args!($($arg)*))) };
}
