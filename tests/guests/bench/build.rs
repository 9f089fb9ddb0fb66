//! Build script of the bench guest: links the `bench` binary with the test guests' layout,
//! `../rt/guest.ld`, when building for bare metal. It is not involved in host builds, where the
//! binary is not built at all.

use std::env;
use std::path::PathBuf;

fn main() {
    let script =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
            .join("../rt/guest.ld");
    println!("cargo:rerun-if-changed={}", script.display());
    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        println!("cargo:rustc-link-arg-bins=-T{}", script.display());
    }
}
