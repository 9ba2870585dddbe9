//! The whole tree as an indexed array with parent links and phandles, and the generic
//! reads over it: properties, cells, `reg` with `ranges` translation, interrupts, paths
//! and aliases.
use super::*;

/// Drops empty regions and regions that wrap around the address space.
pub(super) fn usable(region: Region) -> Option<Region> {
    (region.size > 0 && region.base.checked_add(region.size - 1).is_some()).then_some(region)
}

/// Reads a value of `cells` 32-bit big-endian cells; `None` if it does not fit in 64 bits.
pub(super) fn cells_value(bytes: &[u8]) -> Option<u64> {
    bytes.chunks_exact(4).try_fold(0u64, |acc, cell| {
        if acc >> 32 != 0 {
            return None;
        }
        let cell = u32::from_be_bytes(cell.try_into().ok()?);
        Some((acc << 32) | u64::from(cell))
    })
}

/// Splits a property value into consecutive groups of cells.
pub(super) struct Cells<'a>(pub(super) &'a [u8]);

impl<'a> Cells<'a> {
    pub(super) fn take(&mut self, cells: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.0.split_at_checked(cells.checked_mul(4)?)?;
        self.0 = tail;
        Some(head)
    }
}

/// The spec's limit on `#address-cells` and `#size-cells`.
pub(super) const MAX_CELLS: u32 = 4;

/// One node of the tree, with the parent link that `fdt` does not expose.
pub(super) struct TreeNode<'b, 'a> {
    node: FdtNode<'b, 'a>,
    name: &'a str,
    parent: Option<usize>,
}

/// The whole tree in DT (pre-)order, so a parent's index is always below its children's.
pub(super) struct Tree<'b, 'a> {
    pub(super) nodes: Vec<TreeNode<'b, 'a>>,
    phandles: Vec<(u32, usize)>,
}

pub(super) const ROOT: usize = 0;

impl<'b, 'a> Tree<'b, 'a> {
    pub(super) fn build(fdt: &'b Fdt<'a>) -> Result<Self, DtbError> {
        let missing_root = DtbError::Structure {
            offset: 0,
            problem: StructureError::MissingRoot,
        };
        let root = fdt.all_nodes().next().ok_or(missing_root)?;
        let mut nodes: Vec<TreeNode<'b, 'a>> = Vec::new();
        let mut pending = Vec::from([(root, None)]);
        while let Some((node, parent)) = pending.pop() {
            if nodes.len() >= MAX_NODES {
                return Err(DtbError::Structure {
                    offset: 0,
                    problem: StructureError::TooManyNodes { limit: MAX_NODES },
                });
            }
            let index = nodes.len();
            nodes.push(TreeNode {
                node,
                name: if parent.is_none() { "" } else { node.name },
                parent,
            });
            let first = pending.len();
            pending.extend(node.children().map(|child| (child, Some(index))));
            // The stack pops the last child first; reversing keeps DT order.
            if let Some(children) = pending.get_mut(first..) {
                children.reverse();
            }
        }
        let mut tree = Tree {
            nodes,
            phandles: Vec::new(),
        };
        tree.phandles = (0..tree.nodes.len())
            .filter_map(|i| {
                let phandle = tree
                    .prop_u32(i, "phandle")
                    .or_else(|| tree.prop_u32(i, "linux,phandle"))?;
                Some((phandle, i))
            })
            .collect();
        Ok(tree)
    }

    pub(super) fn prop(&self, i: usize, name: &str) -> Option<&'a [u8]> {
        Some(self.nodes.get(i)?.node.property(name)?.value)
    }

    pub(super) fn prop_u32(&self, i: usize, name: &str) -> Option<u32> {
        let value = self.prop(i, name)?;
        (value.len() == 4).then(|| be32(value, 0)).flatten()
    }

    /// A string list property's entries.
    fn prop_strings(&self, i: usize, name: &str) -> impl Iterator<Item = &'a str> {
        let value = self.prop(i, name).unwrap_or_default();
        let value = value.strip_suffix(&[0]).unwrap_or(value);
        value
            .split(|&b| b == 0)
            .filter(move |_| !value.is_empty())
            .filter_map(|s| core::str::from_utf8(s).ok())
    }

    pub(super) fn prop_str(&self, i: usize, name: &str) -> Option<&'a str> {
        self.prop_strings(i, name).next()
    }

    pub(super) fn is_compatible(&self, i: usize, any_of: &[&str]) -> bool {
        self.prop_strings(i, "compatible")
            .any(|c| any_of.contains(&c))
    }

    pub(super) fn is_enabled(&self, i: usize) -> bool {
        self.prop(i, "status").is_none()
            || matches!(self.prop_str(i, "status"), Some("okay" | "ok"))
    }

    fn parent(&self, i: usize) -> Option<usize> {
        self.nodes.get(i)?.parent
    }

    pub(super) fn name(&self, i: usize) -> &'a str {
        self.nodes.get(i).map_or("", |n| n.name)
    }

    pub(super) fn children(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        self.nodes
            .iter()
            .enumerate()
            .filter(move |(_, n)| n.parent == Some(i))
            .map(|(index, _)| index)
    }

    /// `i`'s child called `name`; without a unit address, `name` also matches the first
    /// child whose name before the `@` is `name`.
    pub(super) fn child_named(&self, i: usize, name: &str) -> Option<usize> {
        let exact = self.children(i).find(|&c| self.name(c) == name);
        if exact.is_some() || name.contains('@') {
            return exact;
        }
        self.children(i).find(|&c| base_name(self.name(c)) == name)
    }

    /// All enabled nodes with one of the compatible strings, in DT order.
    pub(super) fn compatible_nodes<'s>(
        &'s self,
        any_of: &'s [&'s str],
    ) -> impl Iterator<Item = usize> + 's {
        (0..self.nodes.len()).filter(move |&i| self.is_compatible(i, any_of) && self.is_enabled(i))
    }

    pub(super) fn by_phandle(&self, phandle: u32) -> Option<usize> {
        self.phandles
            .iter()
            .find(|&&(p, _)| p == phandle)
            .map(|&(_, i)| i)
    }

    /// `#address-cells` for `i`'s children: 2 when absent, `None` when malformed.
    pub(super) fn address_cells(&self, i: usize) -> Option<usize> {
        self.cells(i, "#address-cells", 2)
    }

    /// `#size-cells` for `i`'s children: 1 when absent, `None` when malformed.
    fn size_cells(&self, i: usize) -> Option<usize> {
        self.cells(i, "#size-cells", 1)
    }

    fn cells(&self, i: usize, name: &str, default: u32) -> Option<usize> {
        let value = match self.prop(i, name) {
            None => default,
            Some(_) => self.prop_u32(i, name)?,
        };
        (value <= MAX_CELLS).then_some(value as usize)
    }

    /// `i`'s `reg` entries as CPU physical regions; `None` for entries that cannot be read
    /// or translated, so indices still match the property.
    pub(super) fn reg(&self, i: usize) -> Vec<Option<Region>> {
        let Some(parent) = self.parent(i) else {
            return Vec::new();
        };
        let (Some(address_cells), Some(size_cells), Some(value)) = (
            self.address_cells(parent),
            self.size_cells(parent),
            self.prop(i, "reg"),
        ) else {
            return Vec::new();
        };
        if address_cells == 0 {
            return Vec::new();
        }
        let mut cells = Cells(value);
        let mut regions = Vec::new();
        while let (Some(address), Some(size)) = (cells.take(address_cells), cells.take(size_cells))
        {
            regions.push(self.reg_entry(address, size, parent));
        }
        regions
    }

    fn reg_entry(&self, address: &[u8], size: &[u8], bus: usize) -> Option<Region> {
        Some(Region {
            base: self.translate(cells_value(address)?, bus)?,
            size: cells_value(size)?,
        })
    }

    pub(super) fn region(&self, i: usize, index: usize) -> Option<Region> {
        self.reg(i).get(index).copied().flatten()
    }

    /// Translates `address`, in the address space of `bus`'s children, to a CPU physical
    /// address through the `ranges` of `bus` and its ancestors.
    fn translate(&self, mut address: u64, mut bus: usize) -> Option<u64> {
        // Each step moves to a parent, whose index is smaller, so this ends.
        while let Some(up) = self.parent(bus) {
            // No `ranges`: the bus's children are not in the CPU's address space.
            let ranges = self.prop(bus, "ranges")?;
            if !ranges.is_empty() {
                let child_cells = self.address_cells(bus)?;
                let parent_cells = self.address_cells(up)?;
                let size_cells = self.size_cells(bus)?;
                if child_cells == 0 {
                    return None;
                }
                let mut cells = Cells(ranges);
                let mut translated = None;
                while let (Some(child), Some(parent), Some(size)) = (
                    cells.take(child_cells),
                    cells.take(parent_cells),
                    cells.take(size_cells),
                ) {
                    let (Some(child), Some(parent), Some(size)) =
                        (cells_value(child), cells_value(parent), cells_value(size))
                    else {
                        continue;
                    };
                    if let Some(offset) = address.checked_sub(child).filter(|&o| o < size) {
                        translated = parent.checked_add(offset);
                        break;
                    }
                }
                address = translated?;
            }
            bus = up;
        }
        Some(address)
    }

    /// The node whose interrupts `i`'s `interrupts` are in: the nearest `interrupt-parent`.
    fn interrupt_parent(&self, i: usize) -> Option<usize> {
        let mut node = Some(i);
        while let Some(n) = node {
            if self.prop(n, "interrupt-parent").is_some() {
                return self.by_phandle(self.prop_u32(n, "interrupt-parent")?);
            }
            node = self.parent(n);
        }
        None
    }

    pub(super) fn interrupts(&self, i: usize) -> Vec<IrqSpec> {
        let count = self
            .interrupt_parent(i)
            .and_then(|p| self.prop_u32(p, "#interrupt-cells"))
            .filter(|n| (1..=3).contains(n))
            .unwrap_or(0) as usize;
        let value = self.prop(i, "interrupts").unwrap_or_default();
        if count == 0 {
            return Vec::new();
        }
        value
            .chunks_exact(count * 4)
            .map(|spec| {
                let mut cells = [0u32; 3];
                for (cell, bytes) in cells.iter_mut().zip(spec.chunks_exact(4)) {
                    *cell = be32(bytes, 0).unwrap_or(0);
                }
                IrqSpec {
                    cells,
                    count: count as u8,
                }
            })
            .collect()
    }

    /// Resolves an absolute path or an alias (optionally followed by `/more/path`).
    pub(super) fn resolve(&self, path: &str) -> Option<usize> {
        let (start, rest) = match path.strip_prefix('/') {
            Some(rest) => (ROOT, rest),
            None => {
                let (alias, rest) = path.split_once('/').unwrap_or((path, ""));
                let aliases = self.child_named(ROOT, "aliases")?;
                // An alias must be an absolute path, so aliases cannot chain or loop.
                let target = self.prop_str(aliases, alias)?.strip_prefix('/')?;
                (self.descend(ROOT, target)?, rest)
            }
        };
        self.descend(start, rest)
    }

    fn descend(&self, from: usize, path: &str) -> Option<usize> {
        path.split('/')
            .filter(|c| !c.is_empty())
            .try_fold(from, |node, component| self.child_named(node, component))
    }
}

/// A node name without its unit address (`cpu@1` -> `cpu`).
pub(super) fn base_name(name: &str) -> &str {
    name.split('@').next().unwrap_or(name)
}
