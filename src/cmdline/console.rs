//! `console=`: which UART the console runs on.
use super::*;

/// Which UART the console runs on, from `console=`.
///
/// `console=pl011` (or Linux's name for it, `ttyAMA0`) is the default; `console=mini` (or
/// `ttyS0`, Linux's name for the BCM2835 auxiliary mini UART) picks the mini UART where the
/// device tree has one. Linux-style options after a comma (`ttyS0,115200`) are ignored: the
/// baud rate is the firmware's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConsoleChoice {
    /// The PL011 (UART0 on a Raspberry Pi).
    #[default]
    Pl011,
    /// The BCM2835 auxiliary mini UART (UART1 on a Raspberry Pi).
    Mini,
}

impl ConsoleChoice {
    /// The name `console=` takes for it.
    pub fn as_str(self) -> &'static str {
        match self {
            ConsoleChoice::Pl011 => "pl011",
            ConsoleChoice::Mini => "mini",
        }
    }
}

impl fmt::Display for ConsoleChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ConsoleChoice {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let name = s.split(',').next().unwrap_or(s);
        match name {
            "pl011" | "ttyAMA0" => Ok(ConsoleChoice::Pl011),
            "mini" | "ttyS0" => Ok(ConsoleChoice::Mini),
            _ => Err(()),
        }
    }
}

/// The console the command line asks for, read before the console exists (boot picks the
/// UART with it). The last `console=` naming a UART this kernel drives wins, as in Linux,
/// where the last `console=` is `/dev/console`; others (`console=tty1`) are left in
/// [`KernelArgs::ignored`] by [`parse`], which boot reports once the console is up.
pub fn console_choice(line: &str) -> ConsoleChoice {
    parse(line).0.console
}
