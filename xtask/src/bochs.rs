//! Booting the monitor's GRUB ISO under Bochs, the emulator with Intel VT-x (`cpu:
//! model=corei7_skylake_x`: VMX with EPT, VPID and unrestricted guest), without a human at the
//! keyboard: a generated bochsrc, a debugger script that continues and quits (Debian's Bochs is
//! a debugger build that otherwise stops at its prompt), COM1 into a file that is streamed to
//! this terminal until Bochs exits or the user presses Ctrl-C.
//!
//! Not a Bochs wrapper library: one machine, one ISO, the console on stdout.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::error::{bail, Context, Error, Result};
use crate::process;

/// The machine itself (bochsrc, debugger script), shared with the test harness.
#[path = "../../tests/src/bochsrc.rs"]
mod machine;

use machine::{bochsrc, SCRIPT};

pub const BOCHS: &str = "bochs";
const POLL: Duration = Duration::from_millis(100);

/// The files of one Bochs run, all under one directory.
pub struct Files {
    pub rc: PathBuf,
    pub script: PathBuf,
    pub serial: PathBuf,
    /// Bochs' log file (from the bochsrc).
    pub log: PathBuf,
    /// What Bochs prints on its terminal: the debugger's and the term display's output.
    pub out: PathBuf,
}

impl Files {
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            rc: dir.join("bochsrc"),
            script: dir.join("commands"),
            serial: dir.join("serial.log"),
            log: dir.join("bochs.log"),
            out: dir.join("bochs.out"),
        }
    }
}

/// A QEMU-style memory size (`512M`, `2G`, or MiB without a suffix) in MiB.
pub fn mem_mib(size: &str) -> Result<u64> {
    machine::mem_mib(size).map_err(Error::new)
}

/// `bochs -q -f RC -rc SCRIPT`, its terminal output going to `files.out`.
pub fn command(files: &Files) -> Result<Command> {
    let out = File::create(&files.out).context(|| format!("creating {}", files.out.display()))?;
    let err = out
        .try_clone()
        .context(|| format!("opening {}", files.out.display()))?;
    let mut cmd = Command::new(BOCHS);
    cmd.arg("-q")
        .arg("-f")
        .arg(&files.rc)
        .arg("-rc")
        .arg(&files.script)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    Ok(cmd)
}

/// Writes the bochsrc and script into `dir`, starts Bochs, and copies the guest's serial
/// output to stdout until Bochs exits.
pub fn run(iso: &Path, mem_mib: u64, dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).context(|| format!("creating {}", dir.display()))?;
    let files = Files::in_dir(dir);
    let rc = bochsrc(iso, (1, mem_mib), &files.serial, None, &files.log);
    process::write_atomically(&files.rc, rc.as_bytes())?;
    process::write_atomically(&files.script, SCRIPT.as_bytes())?;
    // The serial file is created afresh so the stream starts at this run's first byte.
    File::create(&files.serial).context(|| format!("creating {}", files.serial.display()))?;
    let mut cmd = command(&files)?;
    eprintln!("$ {}", process::display(&cmd));
    eprintln!(
        "(Bochs' messages go to {} and {}; Ctrl-C stops it)",
        files.log.display(),
        files.out.display()
    );
    let child = cmd
        .spawn()
        .context(|| format!("cannot run {BOCHS} (install bochs, bochsbios and bochs-term)"))?;
    stream(child, &files.serial)
}

/// Copies what is appended to `serial` to stdout while `child` runs, then the rest.
fn stream(mut child: Child, serial: &Path) -> Result<()> {
    let mut file = File::open(serial).context(|| format!("opening {}", serial.display()))?;
    let mut out = std::io::stdout();
    let mut buf = vec![0; 64 * 1024];
    loop {
        let exited = child.try_wait().context(|| "waiting for bochs".into())?;
        loop {
            let n = file
                .read(&mut buf)
                .context(|| format!("reading {}", serial.display()))?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])
                .and_then(|()| out.flush())
                .context(|| "writing to stdout".into())?;
        }
        if let Some(status) = exited {
            if !status.success() {
                bail!("{BOCHS} exited with {status}");
            }
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bochsrc_has_the_vmx_machine_and_the_media() {
        let rc = bochsrc(
            Path::new("/b/hv.iso"),
            (1, 1024),
            Path::new("/b/serial.log"),
            None,
            Path::new("/b/bochs.log"),
        );
        for line in [
            "cpu: model=corei7_skylake_x, count=1, ips=20000000, reset_on_triple_fault=0",
            "memory: guest=1024, host=1024",
            "ata0-master: type=cdrom, path=\"/b/hv.iso\", status=inserted",
            "boot: cdrom",
            "com1: enabled=1, mode=file, dev=\"/b/serial.log\"",
            "display_library: term",
            "clock: sync=none, time0=local",
        ] {
            assert!(rc.lines().any(|l| l == line), "missing {line:?} in\n{rc}");
        }
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(mem_mib("2G").unwrap(), 2048);
        assert_eq!(mem_mib("512M").unwrap(), 512);
        assert_eq!(mem_mib("768").unwrap(), 768);
        assert!(mem_mib("G").is_err());
        assert!(mem_mib("0").is_err());
        assert!(mem_mib("lots").is_err());
    }

    #[test]
    fn the_script_continues_then_quits() {
        assert_eq!(SCRIPT.lines().collect::<Vec<_>>(), ["c", "quit"]);
    }
}
