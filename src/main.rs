//! The dynstack kernel binary: boots, then runs the shell.
#![no_std]
#![no_main]

dynstack::kernel_main!(dynstack::kernel_shell::run_shell);
