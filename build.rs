//! Relinks the kernel when the linker script or the assembly next to the Rust changes.
fn main() {
    println!("cargo:rerun-if-changed=linker.ld");
    println!("cargo:rerun-if-changed=src/arch/aarch64/boot.s");
    println!("cargo:rerun-if-changed=src/arch/aarch64/vectors.s");
}
