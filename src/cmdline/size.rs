//! The size syntax (`4096`, `0x1000`, `16k`) the command line and the shell share, and
//! sizes written back the same way.
use super::*;

/// Why a text is not a size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeError {
    /// Nothing given.
    Empty,
    /// A leading minus sign.
    Negative,
    /// A prefix or suffix without digits (`k`, `0x`).
    NoDigits,
    /// A character that does not belong (`4kb`, `4q`, ` 4k`).
    Unexpected(char),
    /// More than fits in the address space.
    TooLarge,
}

impl fmt::Display for SizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SizeError::Empty => f.write_str("empty"),
            SizeError::Negative => f.write_str("negative"),
            SizeError::NoDigits => f.write_str("no digits"),
            SizeError::Unexpected(c) => write!(
                f,
                "unexpected {c:?} (expected digits or 0x hex, then an optional k, m or g)"
            ),
            SizeError::TooLarge => f.write_str("too large"),
        }
    }
}

impl core::error::Error for SizeError {}

/// Parses a byte count: decimal (`4096`) or hex (`0x1000`) digits, then an optional
/// binary suffix `k`, `m` or `g` in either case (`16k` = 16384). Rejects empty text,
/// signs, spaces, other suffixes and anything that overflows `usize`.
pub fn parse_size(s: &str) -> Result<usize, SizeError> {
    if s.is_empty() {
        return Err(SizeError::Empty);
    }
    if s.starts_with('-') {
        return Err(SizeError::Negative);
    }
    let (digits, radix) = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None => (s, 10),
    };
    let suffixes = [(['k', 'K'], 10), (['m', 'M'], 20), (['g', 'G'], 30)];
    let (digits, shift) = suffixes
        .iter()
        .find_map(|&(suffix, shift)| Some((digits.strip_suffix(suffix)?, shift)))
        .unwrap_or((digits, 0));
    let value = parse_digits(digits, radix)?;
    let multiplier = 1usize << shift;
    let bytes = usize::try_from(value)
        .ok()
        .and_then(|v| v.checked_mul(multiplier))
        .ok_or(SizeError::TooLarge)?;
    Ok(bytes)
}

/// Digits only, in `radix`, into a `u64` without overflow.
pub(super) fn parse_digits(digits: &str, radix: u32) -> Result<u64, SizeError> {
    if digits.is_empty() {
        return Err(SizeError::NoDigits);
    }
    digits.chars().try_fold(0u64, |acc, c| {
        let digit = c.to_digit(radix).ok_or(SizeError::Unexpected(c))?;
        acc.checked_mul(u64::from(radix))
            .and_then(|v| v.checked_add(u64::from(digit)))
            .ok_or(SizeError::TooLarge)
    })
}
/// Bytes as the command line writes them: `16k`, `1m`, `2g`, or plain bytes.
pub(super) fn size_text(bytes: usize) -> String {
    let units = [(30, 'g'), (20, 'm'), (10, 'k')];
    match units
        .iter()
        .find(|&&(shift, _)| bytes != 0 && bytes.is_multiple_of(1usize << shift))
    {
        Some(&(shift, unit)) => alloc::format!("{}{unit}", bytes >> shift),
        None => bytes.to_string(),
    }
}
