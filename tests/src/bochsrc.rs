//! The Bochs machine the monitor runs on for its Intel VT-x backend: the bochsrc and the
//! debugger script that make Bochs run without a human at the keyboard.
//!
//! One source for two crates: the test harness compiles it as a module and xtask (`cargo xtask
//! run --bochs`) includes the same file with `#[path]`, so both boot the same machine. Not
//! here: starting Bochs or reading its serial port (each user does that its own way).

use std::path::Path;

/// Bochs' own BIOS (Debian's bochsbios). Its VGA BIOS link points into the vgabios package,
/// which is not installed; SeaBIOS' build for an ISA VGA with the Bochs VBE interface (from the
/// seabios package, already needed for QEMU) serves instead.
const BIOS: &str = "/usr/share/bochs/BIOS-bochs-latest";
const VGA_BIOS: &str = "/usr/share/seabios/vgabios-isavga.bin";
/// Emulated instructions per emulated second. With `clock: sync=none` time follows the
/// instruction count, so this only sets how many instructions a guest timer tick is.
const IPS: u64 = 20_000_000;

/// The debugger script: continue, and quit when the simulation stops. Debian's Bochs is a
/// debugger build that otherwise stops at its prompt; Ctrl-C breaks into the debugger, which
/// then runs `quit`.
pub const SCRIPT: &str = "c\nquit\n";

/// The bochsrc: `cpus` Skylake-Xs with VT-x (VMX with EPT, VPID and unrestricted guest),
/// `mem_mib` of RAM, the ISO as the boot CD-ROM, COM1 into `serial`, COM2 (the monitor's trace stream)
/// into `com2` if given, the Bochs log into `log`, the term display (Debian builds no `nogui`)
/// and the port 0xE9 console.
pub fn bochsrc(
    iso: &Path,
    (cpus, mem_mib): (u32, u64),
    serial: &Path,
    com2: Option<&Path>,
    log: &Path,
) -> String {
    // Bochs opens a file-mode port's file when the UART sends its first byte, and flushes
    // after every byte (Bochs 2.7 iodev/serial.cc).
    let com2 = com2.map_or(String::new(), |path| {
        format!("com2: enabled=1, mode=file, dev=\"{}\"\n", path.display())
    });
    format!(
        "cpu: model=corei7_skylake_x, count={cpus}, ips={IPS}, reset_on_triple_fault=0\n\
         memory: guest={mem_mib}, host={mem_mib}\n\
         romimage: file={BIOS}\n\
         vgaromimage: file={VGA_BIOS}\n\
         display_library: term\n\
         ata0-master: type=cdrom, path=\"{iso}\", status=inserted\n\
         boot: cdrom\n\
         com1: enabled=1, mode=file, dev=\"{serial}\"\n\
         {com2}\
         port_e9_hack: enabled=1\n\
         clock: sync=none, time0=local\n\
         log: \"{log}\"\n\
         panic: action=fatal\n\
         error: action=report\n\
         info: action=ignore\n\
         debug: action=ignore\n",
        iso = iso.display(),
        serial = serial.display(),
        log = log.display(),
    )
}

/// A QEMU-style memory size (`512M`, `2G`, or MiB without a suffix) in MiB.
pub fn mem_mib(size: &str) -> Result<u64, String> {
    let (digits, factor) = match size.as_bytes().last() {
        Some(b'G' | b'g') => (&size[..size.len() - 1], 1024),
        Some(b'M' | b'm') => (&size[..size.len() - 1], 1),
        _ => (size, 1),
    };
    match digits.parse::<u64>() {
        Ok(n) if n > 0 => n
            .checked_mul(factor)
            .ok_or_else(|| format!("memory size {size:?} is too large")),
        _ => Err(format!(
            "memory size {size:?} is not a number of MiB or GiB (e.g. 512M, 2G)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn com2_goes_into_its_file_only_when_asked() {
        let (iso, com1, log) = (
            Path::new("/b/hv.iso"),
            Path::new("/b/com1"),
            Path::new("/b/log"),
        );
        let with = bochsrc(iso, (1, 64), com1, Some(Path::new("/b/trace.bin")), log);
        let line = "com2: enabled=1, mode=file, dev=\"/b/trace.bin\"";
        assert!(
            with.lines().any(|l| l == line),
            "missing {line:?} in\n{with}"
        );
        assert!(with.lines().any(|l| l.starts_with("port_e9_hack:")));
        let without = bochsrc(iso, (1, 64), com1, None, log);
        assert!(!without.contains("com2"), "{without}");
        assert_eq!(with.lines().count(), without.lines().count() + 1);
    }
}
