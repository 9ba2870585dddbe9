//! Arithmetic on physical address ranges: usable RAM is the memory ranges minus the holes
//! (kernel image, DTB, reserved ranges). Plain logic, tested on the host.
use alloc::vec::Vec;

/// A half-open physical range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

impl Range {
    /// The range `[base, base + size)`, clamped at the top of the address space.
    pub fn from_base_size(base: u64, size: u64) -> Self {
        Range {
            start: base,
            end: base.saturating_add(size),
        }
    }

    /// Bytes in the range.
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Whether the range holds no byte.
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

/// `ranges` minus every range in `holes`, shrunk inward to multiples of `align`, sorted.
pub fn subtract(ranges: &[Range], holes: &[Range], align: u64) -> Vec<Range> {
    let mut out: Vec<Range> = Vec::new();
    for r in ranges {
        let mut pieces = alloc::vec![*r];
        for h in holes {
            let mut next = Vec::new();
            for p in pieces {
                if h.end <= p.start || h.start >= p.end || h.is_empty() {
                    next.push(p);
                    continue;
                }
                if h.start > p.start {
                    next.push(Range {
                        start: p.start,
                        end: h.start,
                    });
                }
                if h.end < p.end {
                    next.push(Range {
                        start: h.end,
                        end: p.end,
                    });
                }
            }
            pieces = next;
        }
        for p in pieces {
            let start = p.start.div_ceil(align).saturating_mul(align);
            let end = p.end / align * align;
            if end > start {
                out.push(Range { start, end });
            }
        }
    }
    out.sort_by_key(|r| r.start);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, end: u64) -> Range {
        Range { start, end }
    }

    #[test]
    fn holes_split_and_trim_ranges() {
        let ram = [r(0x4000_0000, 0x6000_0000)];
        let holes = [r(0x4000_0000, 0x4010_0000), r(0x4020_0000, 0x4030_0800)];
        let got = subtract(&ram, &holes, 4096);
        assert_eq!(
            got,
            vec![r(0x4010_0000, 0x4020_0000), r(0x4030_1000, 0x6000_0000)]
        );
    }

    #[test]
    fn hole_covering_everything_leaves_nothing() {
        assert!(subtract(&[r(0x1000, 0x5000)], &[r(0, 0x10000)], 4096).is_empty());
    }

    #[test]
    fn unaligned_ranges_shrink_inward_and_sort() {
        let got = subtract(&[r(0x9000_0800, 0x9000_3800), r(0x1001, 0x3000)], &[], 4096);
        assert_eq!(got, vec![r(0x2000, 0x3000), r(0x9000_1000, 0x9000_3000)]);
    }

    #[test]
    fn saturating_at_the_top() {
        assert_eq!(Range::from_base_size(u64::MAX - 10, 100).end, u64::MAX);
    }
}
