//! One QEMU machine running the monitor: built from a `Boot` description, killed on drop, and
//! waited on through what it prints on COM1 (QEMU's stdout). Not here: judging that output.

use std::cell::Cell;
use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::VmConfig;
use crate::console::{self, find, find_line, tail_lines, Missed, Stream};

/// The monitor's own command line, as in the contract.
const MONITOR_COMMAND_LINE: &str = "console=com1 loglvl=info";
/// Lines of output quoted in an error.
const TAIL: usize = 40;

/// What to boot: the monitor, its modules in order, and the host machine's memory.
#[derive(Debug, Clone)]
pub struct Boot {
    hv: PathBuf,
    memory: String,
    modules: Vec<Module>,
}

#[derive(Debug, Clone)]
enum Module {
    /// A file handed over under `name`, the base name a config refers to it by.
    Image {
        name: String,
        path: PathBuf,
    },
    Config(VmConfig),
}

impl Boot {
    /// The monitor at `hv` on a 1 GiB machine, with no modules yet.
    pub fn new(hv: &Path) -> Self {
        Boot {
            hv: hv.to_owned(),
            memory: "1G".into(),
            modules: Vec::new(),
        }
    }

    /// QEMU's `-m` value.
    pub fn memory(mut self, memory: &str) -> Self {
        self.memory = memory.to_owned();
        self
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
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> io::Result<Self> {
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

/// A running QEMU with the monitor.
pub struct Machine {
    child: Mutex<Child>,
    stdout: Arc<Stream>,
    stderr: Arc<Stream>,
    readers: Vec<JoinHandle<()>>,
    /// Where the next wait starts looking, so that consecutive waits assert order.
    cursor: Cell<usize>,
    _modules: TempDir,
}

impl Machine {
    /// Writes the modules into a fresh temporary directory (images as symbolic links, so that
    /// each module's base name is the one its config uses) and starts QEMU on them.
    pub fn boot(boot: Boot) -> Result<Machine, String> {
        let vm = boot.modules.iter().find_map(|module| match module {
            Module::Config(config) => Some(config.name.as_str()),
            Module::Image { .. } => None,
        });
        let dir = TempDir::new(vm.unwrap_or("none"))
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        let mut paths = Vec::with_capacity(boot.modules.len());
        for module in &boot.modules {
            paths.push(write_module(&dir.0, module)?);
        }
        let mut child = Command::new("qemu-system-x86_64")
            .args(["-accel", "tcg", "-cpu", "max", "-smp", "1", "-no-reboot"])
            .args(["-display", "none", "-serial", "stdio", "-monitor", "none"])
            .arg("-m")
            .arg(&boot.memory)
            .arg("-kernel")
            .arg(&boot.hv)
            .args(["-append", MONITOR_COMMAND_LINE])
            .arg("-initrd")
            .arg(module_list(&paths)?)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start qemu-system-x86_64: {e}"))?;
        let (stdout, stdout_reader) =
            Stream::capture(child.stdout.take().expect("stdout is piped"));
        let (stderr, stderr_reader) =
            Stream::capture(child.stderr.take().expect("stderr is piped"));
        Ok(Machine {
            child: Mutex::new(child),
            stdout,
            stderr,
            readers: vec![stdout_reader, stderr_reader],
            cursor: Cell::new(0),
            _modules: dir,
        })
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
        let why = match missed {
            Missed::TimedOut => format!("timed out after {timeout:?}"),
            Missed::Closed => "QEMU closed its output".to_owned(),
        };
        let qemu = match self.exit_status() {
            Some(status) => format!("QEMU exited ({status})"),
            None => "QEMU is still running".to_owned(),
        };
        let mut error = format!(
            "{needle:?} did not appear: {why}; {qemu}; last {TAIL} lines of COM1:\n{}",
            tail_lines(&self.output(), TAIL)
        );
        let stderr = self.stderr.text();
        if !stderr.is_empty() {
            error.push_str(&format!(
                "QEMU's stderr:\n{}",
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

/// Puts `module` into `dir` under its module name and returns its path there.
fn write_module(dir: &Path, module: &Module) -> Result<PathBuf, String> {
    match module {
        Module::Image { name, path } => {
            let link = dir.join(name);
            symlink(path, &link).map_err(|e| {
                format!("cannot link {} to {}: {e}", link.display(), path.display())
            })?;
            Ok(link)
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
        let link = write_module(&dir.0, &image).unwrap();
        assert_eq!(link.file_name().unwrap(), "probe.bzImage");
        assert_eq!(fs::read(&link).unwrap(), b"image");
        let config = write_module(&dir.0, &Module::Config(VmConfig::probe())).unwrap();
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
