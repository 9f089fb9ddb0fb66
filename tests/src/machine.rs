//! One emulated machine running the monitor, under QEMU (AMD SVM; the default) or Bochs (Intel
//! VMX, see `bochs`): built from a `Boot` description, killed on drop, and waited on through
//! what it prints on COM1 (QEMU's stdout, Bochs' COM1 file). Not here: judging that output.

use std::cell::Cell;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::bochs;
use crate::config::VmConfig;
use crate::console::{self, find, find_line, tail_lines, Missed, Stream};

/// The monitor's own command line, as in the contract.
const MONITOR_COMMAND_LINE: &str = "console=com1 loglvl=info";
/// Lines of output quoted in an error.
const TAIL: usize = 40;

/// What to boot: the monitor, its modules in order, the host machine's memory, and the
/// emulator.
#[derive(Debug, Clone)]
pub struct Boot {
    pub(crate) hv: PathBuf,
    pub(crate) memory: String,
    pub(crate) modules: Vec<Module>,
    emulator: Emulator,
    /// Words added to the monitor's command line.
    monitor_options: Vec<String>,
    /// The file COM2 (the monitor's trace stream) is written into, if any.
    pub(crate) com2: Option<PathBuf>,
    /// Arguments added to QEMU's command line (host devices).
    qemu_args: Vec<String>,
    /// The machine's CPUs.
    pub(crate) cpus: u32,
}

/// The emulator a machine runs on, and so the monitor's backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emulator {
    /// QEMU with TCG and `-cpu max` (AMD SVM with nested paging), loading the monitor with its
    /// multiboot loader.
    Qemu,
    /// Bochs as a Skylake-X (Intel VMX with EPT), booting the monitor from a GRUB ISO.
    Bochs,
}

impl Emulator {
    fn name(self) -> &'static str {
        match self {
            Emulator::Qemu => "QEMU",
            Emulator::Bochs => "Bochs",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Module {
    /// A file handed over under `name`, the base name a config refers to it by.
    Image {
        name: String,
        path: PathBuf,
    },
    Config(VmConfig),
    /// A config module written as given (for configs the monitor must reject).
    RawConfig {
        file: String,
        text: String,
    },
}

impl Boot {
    /// The monitor at `hv` on a 1 GiB QEMU machine, with no modules yet.
    pub fn new(hv: &Path) -> Self {
        Boot {
            hv: hv.to_owned(),
            memory: "1G".into(),
            modules: Vec::new(),
            emulator: Emulator::Qemu,
            monitor_options: Vec::new(),
            com2: None,
            qemu_args: Vec::new(),
            cpus: 1,
        }
    }

    /// Gives the machine `n` CPUs (QEMU's `-smp`, Bochs' `cpu: count`); one unless told.
    pub fn cpus(mut self, n: u32) -> Self {
        self.cpus = n;
        self
    }

    /// Adds `word` (e.g. `trace=com2`) to the monitor's command line.
    pub fn monitor_option(mut self, word: &str) -> Self {
        self.monitor_options.push(word.to_owned());
        self
    }

    /// Captures COM2 (the monitor's trace stream) into the file at `path`, under either
    /// emulator. QEMU writes a byte into the file as soon as the monitor gives it to the UART;
    /// Bochs when its UART has sent it at the programmed baud rate, flushing every byte. With
    /// both UARTs at one rate, what the monitor gave COM2 is in the file once a COM1 line of 16
    /// bytes or more (the transmit FIFO's depth) that it printed afterwards has been seen.
    pub fn com2_to_file(mut self, path: &Path) -> Self {
        self.com2 = Some(path.to_owned());
        self
    }

    /// Adds `args` to QEMU's command line, e.g. a host disk (`-drive ...`, `-device ...`).
    /// Bochs machines ignore them.
    pub fn qemu_args(mut self, args: &[&str]) -> Self {
        self.qemu_args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// The machine's memory, as QEMU's `-m` takes it (`512M`, `1G`).
    pub fn memory(mut self, memory: &str) -> Self {
        self.memory = memory.to_owned();
        self
    }

    /// Runs the machine on `emulator`.
    pub fn on(mut self, emulator: Emulator) -> Self {
        self.emulator = emulator;
        self
    }

    /// The monitor's command line: the contract's, then the added options.
    pub(crate) fn command_line(&self) -> String {
        std::iter::once(MONITOR_COMMAND_LINE)
            .chain(self.monitor_options.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Adds the file at `path` as a module named `name`.
    pub fn image(mut self, name: &str, path: &Path) -> Self {
        self.modules.push(Module::Image {
            name: name.to_owned(),
            path: path.to_owned(),
        });
        self
    }

    /// Adds a VM config module (`<vm name>.cfg`).
    pub fn config(mut self, config: VmConfig) -> Self {
        self.modules.push(Module::Config(config));
        self
    }

    /// Adds a config module named `file` holding `text` as is.
    pub fn raw_config(mut self, file: &str, text: &str) -> Self {
        self.modules.push(Module::RawConfig {
            file: file.to_owned(),
            text: text.to_owned(),
        });
        self
    }
}

/// QEMU's `-initrd` value: the module paths joined by commas. QEMU separates modules by commas
/// and the monitor takes a module's name from the first word of its command line, so paths with
/// either cannot be passed.
pub(crate) fn module_list(paths: &[PathBuf]) -> Result<String, String> {
    let mut list = Vec::with_capacity(paths.len());
    for path in paths {
        let text = path
            .to_str()
            .ok_or_else(|| format!("{}: not UTF-8", path.display()))?;
        if text.is_empty() || text.contains(|c: char| c == ',' || c.is_whitespace()) {
            return Err(format!(
                "{text:?}: module paths cannot be empty or hold commas or spaces"
            ));
        }
        list.push(text);
    }
    Ok(list.join(","))
}

/// A directory of its own under the system's temporary directory, removed on drop.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(label: &str) -> io::Result<Self> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path =
                std::env::temp_dir().join(format!("hv-test-{}-{n}-{label}", std::process::id()));
            match fs::create_dir(&path) {
                Ok(()) => return Ok(TempDir(path)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Best effort: a leftover directory in /tmp harms nothing.
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A running emulator with the monitor.
pub struct Machine {
    emulator: Emulator,
    child: Mutex<Child>,
    /// COM1's input (QEMU's `-serial stdio` reads it).
    stdin: Mutex<Option<ChildStdin>>,
    stdout: Arc<Stream>,
    stderr: Arc<Stream>,
    readers: Vec<JoinHandle<()>>,
    /// Where the next wait starts looking, so that consecutive waits assert order.
    cursor: Cell<usize>,
    _modules: TempDir,
}

impl Machine {
    /// Writes the modules into a fresh temporary directory (images as symbolic links, so that
    /// each module's base name is the one its config uses) and starts QEMU on them; or, for
    /// Bochs, makes a GRUB ISO of them there and starts Bochs on it.
    pub fn boot(boot: Boot) -> Result<Machine, String> {
        let vm = boot.modules.iter().find_map(|module| match module {
            Module::Config(config) => Some(config.name.as_str()),
            Module::Image { .. } | Module::RawConfig { .. } => None,
        });
        let dir = TempDir::new(vm.unwrap_or("none"))
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        if boot.emulator == Emulator::Bochs {
            return bochs::boot(&boot, dir);
        }
        let mut paths = Vec::with_capacity(boot.modules.len());
        for module in &boot.modules {
            paths.push(write_module(&dir.0, module, Place::Link)?);
        }
        let mut child = Command::new("qemu-system-x86_64")
            .args(["-accel", "tcg", "-cpu", "max", "-no-reboot"])
            .arg("-smp")
            .arg(boot.cpus.to_string())
            .args(["-display", "none", "-serial", "stdio", "-monitor", "none"])
            .arg("-m")
            .arg(&boot.memory)
            .arg("-kernel")
            .arg(&boot.hv)
            .arg("-append")
            .arg(boot.command_line())
            .args(
                boot.com2
                    .iter()
                    .flat_map(|path| ["-serial".into(), format!("file:{}", path.display())]),
            )
            .arg("-initrd")
            .arg(module_list(&paths)?)
            .args(&boot.qemu_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start qemu-system-x86_64: {e}"))?;
        let stdin = child.stdin.take();
        let stdout = Stream::capture(child.stdout.take().expect("stdout is piped"));
        let stderr = Stream::capture(child.stderr.take().expect("stderr is piped"));
        Ok(Machine::running(
            Emulator::Qemu,
            child,
            stdin,
            stdout,
            stderr,
            dir,
        ))
    }

    /// A machine whose emulator runs as `child`, its COM1 and its stderr read by two streams,
    /// its files in `dir`.
    pub(crate) fn running(
        emulator: Emulator,
        child: Child,
        stdin: Option<ChildStdin>,
        (com1, com1_reader): (Arc<Stream>, JoinHandle<()>),
        (stderr, stderr_reader): (Arc<Stream>, JoinHandle<()>),
        dir: TempDir,
    ) -> Machine {
        Machine {
            emulator,
            child: Mutex::new(child),
            stdin: Mutex::new(stdin),
            stdout: com1,
            stderr,
            readers: vec![com1_reader, stderr_reader],
            cursor: Cell::new(0),
            _modules: dir,
        }
    }

    /// Types `text` on COM1, as a person at the serial console would.
    pub fn send(&self, text: &str) -> Result<(), String> {
        let mut stdin = self
            .stdin
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let pipe = stdin.as_mut().ok_or("QEMU's stdin is closed")?;
        pipe.write_all(text.as_bytes())
            .and_then(|()| pipe.flush())
            .map_err(|e| format!("cannot write to QEMU's stdin: {e}"))
    }

    /// `send`, panicking with the error.
    #[track_caller]
    pub fn type_text(&self, text: &str) {
        if let Err(error) = self.send(text) {
            let out = self.output();
            let tail = &out[out.floor_char_boundary(out.len().saturating_sub(4000))..];
            panic!("{error}; the machine's last output:\n{tail}");
        }
    }

    /// Everything the machine printed on COM1 so far.
    pub fn output(&self) -> String {
        self.stdout.text()
    }

    /// Waits until `needle` appears in the output after the previous match.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Result<(), String> {
        let from = self.cursor.get();
        let end = self.wait(needle, timeout, |bytes| {
            find(bytes, needle.as_bytes(), from).map(|at| at + needle.len())
        })?;
        self.cursor.set(end);
        Ok(())
    }

    /// Waits until a complete line containing `needle` appears after the previous match, and
    /// returns that line without its line break.
    pub fn wait_for_line(&self, needle: &str, timeout: Duration) -> Result<String, String> {
        let from = self.cursor.get();
        let (line, end) = self.wait(needle, timeout, |bytes| {
            find_line(bytes, needle.as_bytes(), from)
        })?;
        self.cursor.set(end);
        Ok(line)
    }

    /// Waits until `needle` appears after the previous match, and returns what came between.
    pub fn wait_for_text(&self, needle: &str, timeout: Duration) -> Result<String, String> {
        let from = self.cursor.get();
        self.wait_for(needle, timeout)?;
        let end = self.cursor.get() - needle.len();
        Ok(self.stdout.text_between(from, end))
    }

    /// `wait_for_text`, panicking with the error.
    #[track_caller]
    pub fn expect_text(&self, needle: &str, timeout: Duration) -> String {
        self.wait_for_text(needle, timeout)
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// `wait_for`, panicking with the error.
    #[track_caller]
    pub fn expect(&self, needle: &str, timeout: Duration) {
        if let Err(error) = self.wait_for(needle, timeout) {
            panic!("{error}");
        }
    }

    /// `wait_for_line`, panicking with the error.
    #[track_caller]
    pub fn expect_line(&self, needle: &str, timeout: Duration) -> String {
        self.wait_for_line(needle, timeout)
            .unwrap_or_else(|error| panic!("{error}"))
    }

    fn wait<T>(
        &self,
        needle: &str,
        timeout: Duration,
        matcher: impl FnMut(&[u8]) -> Option<T>,
    ) -> Result<T, String> {
        let missed = match self.stdout.wait(Instant::now() + timeout, matcher) {
            Ok(found) => return Ok(found),
            Err(missed) => missed,
        };
        let name = self.emulator.name();
        let why = match missed {
            Missed::TimedOut => format!("timed out after {timeout:?}"),
            Missed::Closed => format!("{name} closed its output"),
        };
        let state = match self.exit_status() {
            Some(status) => format!("{name} exited ({status})"),
            None => format!("{name} is still running"),
        };
        let mut error = format!(
            "{needle:?} did not appear: {why}; {state}; last {TAIL} lines of COM1:\n{}",
            tail_lines(&self.output(), TAIL)
        );
        let stderr = self.stderr.text();
        if !stderr.is_empty() {
            error.push_str(&format!(
                "{name}'s stderr:\n{}",
                console::tail_lines(&stderr, TAIL)
            ));
        }
        Err(error)
    }

    fn exit_status(&self) -> Option<ExitStatus> {
        let mut child = self
            .child
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        child.try_wait().ok().flatten()
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        let child = self
            .child
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Killing an exited child fails harmlessly; waiting reaps it either way.
        let _ = child.kill();
        let _ = child.wait();
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

/// How an image module is put in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// A symbolic link to the artifact (QEMU reads through it).
    Link,
    /// A copy (for an ISO image, which must hold the file itself).
    Copy,
}

/// Puts `module` into `dir` under its module name and returns its path there.
pub(crate) fn write_module(dir: &Path, module: &Module, place: Place) -> Result<PathBuf, String> {
    match module {
        Module::Image { name, path } => {
            let target = dir.join(name);
            let put = match place {
                Place::Link => symlink(path, &target),
                Place::Copy => fs::copy(path, &target).map(drop),
            };
            put.map_err(|e| format!("cannot put {} at {}: {e}", path.display(), target.display()))?;
            Ok(target)
        }
        Module::RawConfig { file, text } => {
            let path = dir.join(file);
            fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok(path)
        }
        Module::Config(config) => {
            let file = dir.join(config.file_name());
            fs::write(&file, config.render()?)
                .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
            Ok(file)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_list_joins_paths_with_commas() {
        let paths = [
            PathBuf::from("/tmp/d/vmlinuz"),
            PathBuf::from("/tmp/d/linux.cfg"),
        ];
        assert_eq!(
            module_list(&paths).unwrap(),
            "/tmp/d/vmlinuz,/tmp/d/linux.cfg"
        );
        assert_eq!(module_list(&[]).unwrap(), "");
    }

    #[test]
    fn module_list_refuses_what_qemu_or_the_monitor_would_split() {
        assert!(module_list(&[PathBuf::from("/tmp/a,b")]).is_err());
        assert!(module_list(&[PathBuf::from("/tmp/a b")]).is_err());
        assert!(module_list(&[PathBuf::new()]).is_err());
    }

    #[test]
    fn modules_are_written_under_the_names_configs_use() {
        let dir = TempDir::new("unit").unwrap();
        let target = dir.0.join("artifact.bin");
        fs::write(&target, b"image").unwrap();
        let image = Module::Image {
            name: "probe.bzImage".into(),
            path: target,
        };
        let link = write_module(&dir.0, &image, Place::Link).unwrap();
        assert!(fs::symlink_metadata(&link).unwrap().is_symlink());
        assert_eq!(link.file_name().unwrap(), "probe.bzImage");
        assert_eq!(fs::read(&link).unwrap(), b"image");
        let copies = TempDir::new("unit-copy").unwrap();
        let copy = write_module(&copies.0, &image, Place::Copy).unwrap();
        assert!(fs::symlink_metadata(&copy).unwrap().is_file());
        assert_eq!(fs::read(&copy).unwrap(), b"image");
        let config = write_module(&dir.0, &Module::Config(VmConfig::probe()), Place::Link).unwrap();
        assert_eq!(config.file_name().unwrap(), "probe.cfg");
        assert_eq!(
            fs::read_to_string(&config).unwrap(),
            VmConfig::probe().render().unwrap()
        );
        let path = dir.0.clone();
        drop(dir);
        assert!(!path.exists(), "the directory goes away with its owner");
    }

    #[test]
    fn temporary_directories_are_distinct() {
        let (a, b) = (TempDir::new("x").unwrap(), TempDir::new("x").unwrap());
        assert_ne!(a.0, b.0);
        assert!(a.0.starts_with(std::env::temp_dir()));
    }
}
