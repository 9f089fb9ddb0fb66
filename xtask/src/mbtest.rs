//! The multiboot test guest (tests/guests/mbtest): built for bare metal and flattened into
//! build/mbtest.bin, a flat image whose a.out-kludge multiboot header gives its load address
//! (0x100000). Not the guest itself.

use std::fs;
use std::path::PathBuf;

use crate::bzimage::flatten;
use crate::cargo::{self, BinSpec, Profile};
use crate::elf::Elf64;
use crate::error::{Context, Result};
use crate::layout::Layout;
use crate::process;

const MBTEST: BinSpec = BinSpec {
    package: "mbtest",
    bin: "mbtest",
    feature: "guest",
};

/// Builds the guest and writes build/mbtest.bin.
pub fn build(layout: &Layout) -> Result<PathBuf> {
    let exe = cargo::build(layout.root(), &MBTEST, Profile::Release)?;
    let elf = fs::read(&exe).context(|| format!("reading {}", exe.display()))?;
    let image = Elf64::parse(&elf)
        .and_then(|elf| flatten(&elf))
        .context(|| format!("flattening {}", exe.display()))?;
    let dest = layout.build_dir().join("mbtest.bin");
    process::write_atomically(&dest, &image.bytes)?;
    Ok(dest)
}
