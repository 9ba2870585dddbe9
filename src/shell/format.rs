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
        let text = format!("{sign}{}.{}", v / 10, v % 10);
        // `pad` so that width and alignment in a format string apply to the whole number.
        f.pad(&text)
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

/// A table whose columns are as wide as their widest cell, numbers right-aligned.
pub(super) struct Table<const N: usize> {
    pub(super) header: [&'static str; N],
    pub(super) right: [bool; N],
    pub(super) rows: Vec<[String; N]>,
}

impl<const N: usize> Table<N> {
    pub(super) fn new(header: &[&'static str; N], right: &[bool; N]) -> Self {
        Self {
            header: *header,
            right: *right,
            rows: Vec::new(),
        }
    }

    pub(super) fn row(&mut self, cells: [String; N]) {
        self.rows.push(cells);
    }

    pub(super) fn print(&self, out: &mut dyn Write) {
        let mut widths = self.header.map(|h| h.chars().count());
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        self.line(out, &widths, self.header.iter().copied());
        for row in &self.rows {
            self.line(out, &widths, row.iter().map(String::as_str));
        }
    }

    fn line<'a>(
        &self,
        out: &mut dyn Write,
        widths: &[usize; N],
        cells: impl Iterator<Item = &'a str>,
    ) {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            let width = widths[i];
            if i > 0 {
                text.push_str("  ");
            }
            let _ = if self.right[i] {
                write!(text, "{cell:>width$}")
            } else {
                write!(text, "{cell:<width$}")
            };
        }
        say!(out, "{}", text.trim_end());
    }
}
