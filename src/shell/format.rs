//! Number and table formatting shared by the commands' output: percentages in tenths
//! computed in integers, human-readable sizes, aligned tables.
use super::*;

/// `100 × (1 − held / fixed)` with one decimal, rounded half away from zero, computed in
/// integers so the host and the soft-float kernel print the same digits (`stacks` passes as
/// held its mapped pages, parked copies and reserve pages). `0.0` when there is nothing to
/// compare against.
pub fn savings_pct(held_kib: u64, fixed_equiv_kib: u64) -> Tenths {
    if fixed_equiv_kib == 0 {
        return Tenths(0);
    }
    let fixed = i128::from(fixed_equiv_kib);
    let saved = fixed - i128::from(held_kib);
    // 1000 × saved / fixed, in tenths of a percent; i128 holds 1000 × u64::MAX.
    let magnitude = (1000 * saved.abs() * 2 + fixed) / (2 * fixed);
    Tenths(if saved < 0 { -magnitude } else { magnitude })
}

/// A number in tenths, printed with exactly one decimal ("66.7", "-5.0", "0.0").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tenths(i128);

impl Tenths {
    /// The same magnitude, never negative.
    pub(super) fn abs(self) -> Tenths {
        Tenths(self.0.abs())
    }

    /// Whether it is below zero.
    pub(super) fn is_negative(self) -> bool {
        self.0 < 0
    }

    /// `a / b` in tenths, rounded half up; `0` when `b` is zero.
    pub(super) fn ratio(a: u64, b: u64) -> Tenths {
        if b == 0 {
            return Tenths(0);
        }
        // i128 holds 20 × u64::MAX, so no input can overflow.
        let (a, b) = (i128::from(a), i128::from(b));
        Tenths((20 * a + b) / (2 * b))
    }
}

impl fmt::Display for Tenths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let v = self.0.unsigned_abs();
        // Built in a fixed buffer (no heap: `stacks` must print with memory out), then
        // `pad` so that width and alignment in a format string apply to the whole number.
        let mut text = Text::<48>::new();
        let _ = write!(text, "{sign}{}.{}", v / 10, v % 10);
        f.pad(text.as_str())
    }
}

/// `a / b` with a fixed number of decimals, rounded half up, computed in integers (the
/// kernel has no floating point); `0` with those decimals when `b` is zero. Width and
/// alignment in a format string apply to the whole number, and nothing is allocated (the
/// demo prints these with memory short).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotient {
    a: u64,
    b: u64,
    places: u32,
}

impl Quotient {
    /// The most decimals a quotient prints.
    pub const MAX_PLACES: u32 = 18;

    /// `a / b` with `places` decimals (at most [`MAX_PLACES`](Self::MAX_PLACES)).
    pub fn new(a: u64, b: u64, places: u32) -> Self {
        Self {
            a,
            b,
            places: places.min(Self::MAX_PLACES),
        }
    }
}

impl fmt::Display for Quotient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // 10^18 × u64::MAX fits in a u128.
        let scale = 10u128.pow(self.places);
        let v = if self.b == 0 {
            0
        } else {
            (u128::from(self.a) * scale + u128::from(self.b) / 2) / u128::from(self.b)
        };
        let mut text = Text::<64>::new();
        let _ = if self.places == 0 {
            write!(text, "{v}")
        } else {
            write!(
                text,
                "{}.{:0width$}",
                v / scale,
                v % scale,
                width = self.places as usize
            )
        };
        f.pad(text.as_str())
    }
}

/// KiB in the largest binary unit that keeps it at least 1, with one decimal.
pub(super) struct Human(pub(super) u64);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 4] = ["MiB", "GiB", "TiB", "PiB"];
        if self.0 < 1024 {
            return write!(f, "({} KiB)", self.0);
        }
        let mut divisor = 1024u64;
        let mut unit = 0;
        while unit + 1 < UNITS.len() && self.0 / divisor >= 1024 {
            divisor *= 1024;
            unit += 1;
        }
        write!(f, "({} {})", Tenths::ratio(self.0, divisor), UNITS[unit])
    }
}

pub(super) fn plural(n: u64, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 {
        one
    } else {
        many
    }
}

/// Text of at most `N` bytes, built with `write!` in a fixed buffer (no heap: what the shell
/// prints and reports must work when memory is out). Longer text is cut at a character
/// boundary.
#[derive(Clone, Copy)]
pub struct Text<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Text<N> {
    /// Empty text.
    pub const fn new() -> Self {
        Self {
            bytes: [0; N],
            len: 0,
        }
    }

    /// `s`, cut to `N` bytes.
    pub fn of(s: &str) -> Self {
        let mut t = Self::new();
        let _ = t.write_str(s);
        t
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Only whole characters are stored.
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

impl<const N: usize> Default for Text<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Write for Text<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = N - self.len;
        let mut take = s.len().min(room);
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        self.bytes[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        Ok(())
    }
}

impl<const N: usize> fmt::Display for Text<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl<const N: usize> fmt::Debug for Text<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl<const N: usize> PartialEq for Text<N> {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl<const N: usize> Eq for Text<N> {}

/// Counts the characters written to it: a cell's width without building the cell.
struct Width(usize);

impl Write for Width {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0 += s.chars().count();
        Ok(())
    }
}

fn width_of(cell: &dyn fmt::Display) -> usize {
    let mut w = Width(0);
    let _ = write!(w, "{cell}");
    w.0
}

/// The rows of a table, produced on demand: `rows` calls its argument once per row, in
/// order, the same way every time it is called.
pub(super) type Rows<'a, const N: usize> = &'a dyn Fn(&mut dyn FnMut([&dyn fmt::Display; N]));

/// Prints a table whose columns are as wide as their widest cell (`right`: right-aligned),
/// in two passes over `rows` (widths, then lines) written straight to `out`: nothing is
/// collected, so a table prints with memory out. No line ends in spaces.
pub(super) fn table<const N: usize>(
    out: &mut dyn Write,
    header: &[&str; N],
    right: &[bool; N],
    rows: Rows<'_, N>,
) {
    let mut widths = header.map(|h| h.chars().count());
    rows(&mut |cells| {
        for (w, cell) in widths.iter_mut().zip(cells) {
            *w = (*w).max(width_of(cell));
        }
    });
    let line = |out: &mut dyn Write, cells: [&dyn fmt::Display; N]| {
        // Left-aligned cells at the end of a line are not padded.
        let last = (0..N).rev().find(|&i| right[i] || width_of(cells[i]) > 0);
        for (i, cell) in cells.iter().enumerate() {
            if last.is_some_and(|l| i > l) {
                break;
            }
            if i > 0 {
                let _ = out.write_str("  ");
            }
            let pad = widths[i].saturating_sub(width_of(*cell));
            if right[i] {
                let _ = write!(out, "{:pad$}{cell}", "");
            } else if Some(i) == last {
                let _ = write!(out, "{cell}");
            } else {
                let _ = write!(out, "{cell}{:pad$}", "");
            }
        }
        let _ = writeln!(out);
    };
    let h: [&dyn fmt::Display; N] = core::array::from_fn(|i| &header[i] as &dyn fmt::Display);
    line(out, h);
    rows(&mut |cells| line(out, cells));
}
