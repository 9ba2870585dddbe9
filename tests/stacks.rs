//! Placeholder: being written.
#![no_std]
#![no_main]

extern crate alloc;

use dynstack::testing::{run, TestCase};

dynstack::kernel_main!(main);

fn main() {
    let cases: &[TestCase] = &[];
    run(cases)
}
