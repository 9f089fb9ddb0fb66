//! Running host tools and writing output files: every command is echoed to stderr before it
//! runs, and a failure names the command. Not a shell: arguments are never re-split.

use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::error::{bail, Context, Result};

/// The command line as a user could paste it (arguments with spaces quoted).
pub fn display(cmd: &Command) -> String {
    let quote = |s: &OsStr| {
        let s = s.to_string_lossy();
        if s.is_empty() || s.contains([' ', '"', '\'', '\\']) {
            format!("'{}'", s.replace('\'', r"'\''"))
        } else {
            s.into_owned()
        }
    };
    std::iter::once(quote(cmd.get_program()))
        .chain(cmd.get_args().map(quote))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs a command with inherited stdio; an error if it cannot start or exits non-zero.
pub fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("$ {}", display(cmd));
    let status = cmd
        .status()
        .context(|| format!("cannot run {}", program(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", display(cmd));
    }
    Ok(())
}

/// Runs a command quietly and returns its stdout; stderr is passed through.
pub fn stdout_of(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .context(|| format!("cannot run {}", program(cmd)))?;
    if !out.status.success() {
        bail!("`{}` failed ({})", display(cmd), out.status);
    }
    String::from_utf8(out.stdout).context(|| format!("`{}` printed non-UTF-8", display(cmd)))
}

/// Writes `path` through a temporary file in the same directory, so an interrupted run
/// never leaves a truncated artifact behind under the final name.
pub fn write_atomically(path: &Path, data: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).context(|| format!("creating {}", dir.display()))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".part");
    fs::write(&tmp, data).context(|| format!("writing {}", Path::new(&tmp).display()))?;
    fs::rename(&tmp, path).context(|| format!("renaming to {}", path.display()))
}

fn program(cmd: &Command) -> String {
    cmd.get_program().to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_only_what_needs_it() {
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-append", "console=com1 loglvl=info", "-m", "2G", "it's"]);
        assert_eq!(
            display(&cmd),
            r"qemu-system-x86_64 -append 'console=com1 loglvl=info' -m 2G 'it'\''s'"
        );
    }

    #[test]
    fn failing_commands_are_errors() {
        assert!(run(&mut Command::new("false")).is_err());
        assert!(stdout_of(&mut Command::new("/nonexistent/tool")).is_err());
        assert_eq!(stdout_of(Command::new("echo").arg("hi")).unwrap(), "hi\n");
    }

    #[test]
    fn atomic_write_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("xtask-write-{}", std::process::id()));
        let file = dir.join("sub/out.bin");
        write_atomically(&file, b"data").unwrap();
        assert_eq!(fs::read(&file).unwrap(), b"data");
        assert!(!dir.join("sub/out.bin.part").exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
