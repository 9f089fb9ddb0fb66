//! Booting a `Boot` under Bochs, whose `corei7_skylake_x` CPU has Intel VT-x with EPT, so the
//! monitor runs its VMX backend: the monitor and the modules go into a GRUB ISO (Bochs has no
//! multiboot loader), Bochs runs it without a human (a debugger script that continues, then
//! quits), its log goes to its stderr, and COM1, which Bochs writes into a file, is followed as
//! it grows. The result is a `Machine` like QEMU's, waited on the same way and killed on drop.
//!
//! Not here: the bochsrc and the GRUB menu (shared with xtask in `bochsrc` and `grub_iso`), or
//! judging the output.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::bochsrc::{bochsrc, mem_mib, SCRIPT};
use crate::console::Stream;
use crate::grub_iso::{grub_cfg, mkrescue};
use crate::machine::{write_module, Boot, Emulator, Machine, Place, TempDir};

/// How often the COM1 file is looked at once everything in it has been read.
const POLL: Duration = Duration::from_millis(50);

/// Makes the ISO for `boot` in `dir` and starts Bochs on it.
pub(crate) fn boot(boot: &Boot, dir: TempDir) -> Result<Machine, String> {
    let mem = mem_mib(&boot.memory)?;
    let iso = dir.0.join("hv.iso");
    make_iso(boot, &dir.0.join("iso-root"), &iso)?;
    let (rc, script, serial) = (
        dir.0.join("bochsrc"),
        dir.0.join("commands"),
        dir.0.join("com1.log"),
    );
    // The log goes to stderr, which the harness reads, and which closes when Bochs exits.
    let text = bochsrc(
        &iso,
        (boot.cpus, mem),
        &serial,
        boot.com2.as_deref(),
        Path::new("/dev/stderr"),
    );
    write(&rc, &text)?;
    write(&script, SCRIPT)?;
    // COM1 is created before Bochs starts, so the follower can open it at once; Bochs
    // truncates it again, which leaves an empty file empty.
    write(&serial, "")?;
    // `bochs` is a script that execs `bochs-bin`, so the child is Bochs itself, and the SIGKILL
    // `Machine` sends on drop ends it (a SIGTERM to its process group leaves it running).
    let mut child = Command::new("bochs")
        .arg("-q")
        .arg("-f")
        .arg(&rc)
        .arg("-rc")
        .arg(&script)
        // The term display draws the (empty) VGA screen on stdout with curses, which needs a
        // known terminal type, also where the tests run without one.
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!("cannot start bochs: {e} (install bochs, bochsbios and bochs-term)")
        })?;
    let stderr = Stream::capture(child.stderr.take().expect("stderr is piped"));
    let com1 = File::open(&serial).map_err(|e| format!("cannot open {}: {e}", serial.display()))?;
    let com1 = Stream::capture(Follow {
        file: com1,
        bochs: Arc::clone(&stderr.0),
        bochs_gone: false,
    });
    Ok(Machine::running(
        Emulator::Bochs,
        child,
        None,
        com1,
        stderr,
        dir,
    ))
}

/// Lays out /boot in `staging` (the monitor, each module under its name, the menu) and makes
/// the ISO `out` from it.
fn make_iso(boot: &Boot, staging: &Path, out: &Path) -> Result<(), String> {
    let dir = staging.join("boot");
    let grub = dir.join("grub");
    fs::create_dir_all(&grub).map_err(|e| format!("cannot create {}: {e}", grub.display()))?;
    fs::copy(&boot.hv, dir.join("hv.elf"))
        .map_err(|e| format!("cannot copy {}: {e}", boot.hv.display()))?;
    let mut names = Vec::with_capacity(boot.modules.len());
    for module in &boot.modules {
        let path = write_module(&dir, module, Place::Copy)?;
        names.push(grub_name(&path)?);
    }
    write(
        &grub.join("grub.cfg"),
        &grub_cfg(&boot.command_line(), names.iter().map(String::as_str)),
    )?;
    let made = mkrescue(staging, out)
        .output()
        .map_err(|e| format!("cannot run grub-mkrescue: {e} (install grub-pc-bin, xorriso)"))?;
    // The image holds copies of everything; the staging tree is no longer needed.
    let _ = fs::remove_dir_all(staging);
    if made.status.success() {
        Ok(())
    } else {
        Err(format!(
            "grub-mkrescue failed ({}):\n{}",
            made.status,
            String::from_utf8_lossy(&made.stderr)
        ))
    }
}

/// A module's name as it stands in the GRUB menu: its file name, if that needs no quoting
/// there (GRUB splits a command line at white space and treats quotes and `$` specially).
fn grub_name(path: &Path) -> Result<String, String> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let plain = |c: char| c.is_ascii_alphanumeric() || "._+-".contains(c);
    if name.is_empty() || !name.chars().all(plain) {
        return Err(format!(
            "module name {name:?} must be non-empty and use only A-Z a-z 0-9 . _ + -"
        ));
    }
    Ok(name.to_owned())
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// COM1 as Bochs writes it into a file: reads wait for more until Bochs has exited (its
/// stderr, `bochs`, is closed), then take what is left and end.
struct Follow {
    file: File,
    bochs: Arc<Stream>,
    bochs_gone: bool,
}

impl Read for Follow {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        loop {
            let n = self.file.read(buffer)?;
            if n > 0 || self.bochs_gone {
                return Ok(n);
            }
            // Checked after an empty read, so one more read takes what Bochs wrote last.
            self.bochs_gone = self.bochs.is_closed();
            if !self.bochs_gone {
                thread::sleep(POLL);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::VmConfig;
    use std::time::Instant;

    #[test]
    fn module_names_must_stand_unquoted_in_the_menu() {
        assert_eq!(
            grub_name(Path::new("/t/initramfs.cpio")).unwrap(),
            "initramfs.cpio"
        );
        for bad in ["/t/a b", "/t/a\"b", "/t/$x", "/"] {
            assert!(grub_name(Path::new(bad)).is_err(), "{bad}");
        }
    }

    /// Needs grub-mkrescue and xorriso, as `cargo xtask test` does anyway.
    #[test]
    fn the_iso_holds_the_monitor_the_modules_and_the_menu() {
        let dir = TempDir::new("iso-unit").unwrap();
        let (hv, kernel) = (dir.0.join("monitor"), dir.0.join("k.bin"));
        fs::write(&hv, b"monitor").unwrap();
        fs::write(&kernel, b"kernel").unwrap();
        let boot = Boot::new(&hv)
            .image("probe.bzImage", &kernel)
            .config(VmConfig::probe());
        let (staging, iso) = (dir.0.join("root"), dir.0.join("out.iso"));
        make_iso(&boot, &staging, &iso).unwrap();
        let image = fs::read(&iso).unwrap();
        // ISO 9660 primary volume descriptor at sector 16 (ECMA-119 8.4).
        assert_eq!(image.get(0x8001..0x8006), Some(&b"CD001"[..]));
        let listing = Command::new("xorriso")
            .arg("-indev")
            .arg(&iso)
            .args(["-find", "/boot", "-type", "f"])
            .output()
            .unwrap();
        let listing = String::from_utf8_lossy(&listing.stdout);
        for file in ["hv.elf", "probe.bzImage", "probe.cfg", "grub/grub.cfg"] {
            assert!(
                listing.contains(&format!("'/boot/{file}'")),
                "{file} missing:\n{listing}"
            );
        }
        assert!(!staging.exists(), "the staging tree is removed");
    }

    #[test]
    fn the_follower_waits_for_data_until_the_writer_is_gone() {
        let dir = TempDir::new("follow-unit").unwrap();
        let path = dir.0.join("com1");
        fs::write(&path, b"").unwrap();
        let (reader_end, writer_end) = std::os::unix::net::UnixStream::pair().unwrap();
        let (bochs, _reader) = Stream::capture(reader_end);
        let (com1, com1_reader) = Stream::capture(Follow {
            file: File::open(&path).unwrap(),
            bochs,
            bochs_gone: false,
        });
        fs::write(&path, b"hv: late line\n").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let seen = com1.wait(deadline, |bytes| crate::console::find(bytes, b"late", 0));
        assert_eq!(seen.ok(), Some(4));
        assert!(!com1.is_closed(), "the writer still runs");
        drop(writer_end);
        com1_reader.join().unwrap();
        assert!(com1.is_closed());
        assert_eq!(com1.text(), "hv: late line\n");
    }
}
