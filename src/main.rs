//! The dynstack kernel binary: boots, then runs the shell.
#![no_std]
#![no_main]

dynstack::kernel_main!(dynstack::shell::backend::run_shell);
