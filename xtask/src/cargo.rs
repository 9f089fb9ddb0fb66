//! Building the bare-metal binaries with cargo, and finding them: cargo's JSON messages name
//! each executable it produced, which respects CARGO_TARGET_DIR, `build.target-dir` and the
//! profile without xtask guessing. Not a JSON library: it reads one string field.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{bail, Context, Result};
use crate::process;

/// The target both the monitor and the test guests are built for.
pub const BARE_METAL_TARGET: &str = "x86_64-unknown-none";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    Release,
    Debug,
}

/// One binary to build: `cargo build -p PACKAGE --bin BIN --features FEATURE --target ...`.
pub struct BinSpec<'a> {
    pub package: &'a str,
    pub bin: &'a str,
    pub feature: &'a str,
}

/// The monitor (contract: "build/hv.elf").
pub const MONITOR: BinSpec = BinSpec {
    package: "hv-core",
    bin: "hv",
    feature: "bare-metal",
};

/// The probe test guest (contract: "build/probe.bzImage", before wrapping).
pub const PROBE: BinSpec = BinSpec {
    package: "probe",
    bin: "probe",
    feature: "guest",
};

/// The bench test guest (build/bench.bzImage and, for booting it on bare QEMU, build/bench.elf).
pub const BENCH: BinSpec = BinSpec {
    package: "bench",
    bin: "bench",
    feature: "guest",
};

/// The cargo that runs xtask, so toolchain overrides carry over.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Builds a bare-metal binary and returns the path cargo wrote it to.
pub fn build(root: &Path, spec: &BinSpec, profile: Profile) -> Result<PathBuf> {
    let mut cmd = cargo();
    cmd.current_dir(root).args([
        "build",
        "--message-format=json-render-diagnostics",
        "-p",
        spec.package,
        "--bin",
        spec.bin,
        "--features",
        spec.feature,
        "--target",
        BARE_METAL_TARGET,
    ]);
    if profile == Profile::Release {
        cmd.arg("--release");
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
    eprintln!("$ {}", process::display(&cmd));
    let out = cmd.output().context(|| "cannot run cargo".to_string())?;
    if !out.status.success() {
        bail!("building {} failed ({})", spec.bin, out.status);
    }
    let messages = String::from_utf8_lossy(&out.stdout);
    match executable_named(&messages, spec.bin) {
        Some(path) => Ok(path),
        None => bail!("cargo reported no executable named {}", spec.bin),
    }
}

/// The last `executable` in cargo's JSON messages whose file name is `bin`.
fn executable_named(messages: &str, bin: &str) -> Option<PathBuf> {
    messages
        .lines()
        .filter(|line| line.contains(r#""reason":"compiler-artifact""#))
        .filter_map(|line| string_field(line, "executable"))
        .map(PathBuf::from)
        .rfind(|path| path.file_name().is_some_and(|name| name == bin))
}

/// The value of `"key":"..."` in one line of JSON, with escapes decoded; None if the key is
/// absent or not a string (cargo writes `"executable":null` for libraries).
fn string_field(line: &str, key: &str) -> Option<String> {
    let pattern = format!("\"{key}\":\"");
    let start = line.find(&pattern)? + pattern.len();
    let mut out = String::new();
    let mut chars = line[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => out.push(match chars.next()? {
                'n' => '\n',
                't' => '\t',
                'r' => '\r',
                'b' => '\u{8}',
                'f' => '\u{c}',
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?
                }
                other => other,
            }),
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGES: &str = concat!(
        r#"{"reason":"compiler-artifact","package_id":"path+file:///w/vcpu#0.1.0","target":{"name":"vcpu"},"filenames":["/t/libvcpu.rlib"],"executable":null,"fresh":true}"#,
        "\n",
        r#"{"reason":"compiler-artifact","target":{"name":"hv"},"executable":"/w/my \"target\"/x86_64-unknown-none/release/hv","fresh":false}"#,
        "\n",
        r#"{"reason":"build-finished","success":true}"#,
        "\n"
    );

    #[test]
    fn finds_the_executable_in_cargo_messages() {
        assert_eq!(
            executable_named(MESSAGES, "hv"),
            Some(PathBuf::from(
                "/w/my \"target\"/x86_64-unknown-none/release/hv"
            ))
        );
        assert_eq!(executable_named(MESSAGES, "probe"), None);
    }

    #[test]
    fn string_fields_decode_escapes_and_skip_non_strings() {
        assert_eq!(
            string_field(r#"{"a":"x\\y\u0041"}"#, "a").as_deref(),
            Some("x\\yA")
        );
        assert_eq!(string_field(r#"{"a":null}"#, "a"), None);
        assert_eq!(string_field(r#"{"a":"unterminated"#, "a"), None);
    }
}
