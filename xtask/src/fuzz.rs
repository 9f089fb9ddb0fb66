//! `cargo xtask fuzz [--time SECS] [--sanitizer address|none] [TARGET...]`: runs the cargo-fuzz
//! targets in `fuzz/` one after the other, each for a bounded time, and prints executions,
//! coverage and crashes per target. Installs cargo-fuzz if it is missing and builds with the
//! stable toolchain (`RUSTC_BOOTSTRAP=1` unlocks the `-Zsanitizer` flag cargo-fuzz passes).
//!
//! It is not the fuzz targets (see `fuzz/fuzz_targets/`) and does not minimise crashes: a crash
//! input stays under `fuzz/artifacts/TARGET/` for a regression test.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::error::{bail, Context, Result};
use crate::layout::Layout;
use crate::process;

/// Seconds per target when `--time` is not given.
pub const DEFAULT_SECS: u64 = 60;
/// A single input running longer than this, in seconds, is reported as a hang.
const INPUT_TIMEOUT_SECS: u64 = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sanitizer {
    Address,
    None,
}

impl Sanitizer {
    fn name(self) -> &'static str {
        match self {
            Sanitizer::Address => "address",
            Sanitizer::None => "none",
        }
    }
}

/// The options of `cargo xtask fuzz`.
#[derive(Debug, PartialEq, Eq)]
pub struct FuzzArgs {
    pub secs: u64,
    /// `None`: AddressSanitizer, falling back to no sanitizer if that build fails.
    pub sanitizer: Option<Sanitizer>,
    /// Empty: every target.
    pub targets: Vec<String>,
}

impl FuzzArgs {
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut parsed = FuzzArgs {
            secs: DEFAULT_SECS,
            sanitizer: None,
            targets: Vec::new(),
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
                _ => (arg.as_str(), None),
            };
            let mut value = || match inline.clone().or_else(|| args.next().cloned()) {
                Some(v) if !v.is_empty() => Ok(v),
                _ => Err(crate::error::Error::new(format!("{flag} needs a value"))),
            };
            match flag {
                "--time" => {
                    let v = value()?;
                    parsed.secs = match v.parse() {
                        Ok(secs) if secs > 0 => secs,
                        _ => bail!("--time needs a positive number of seconds, not {v:?}"),
                    };
                }
                "--sanitizer" => {
                    parsed.sanitizer = Some(match value()?.as_str() {
                        "address" => Sanitizer::Address,
                        "none" => Sanitizer::None,
                        other => bail!("--sanitizer is address or none, not {other:?}"),
                    });
                }
                f if f.starts_with('-') => bail!("unknown option {f}"),
                target => parsed.targets.push(target.to_string()),
            }
        }
        Ok(parsed)
    }
}

/// What one run reported.
#[derive(Debug, Default, PartialEq, Eq)]
struct Outcome {
    executions: Option<u64>,
    coverage: Option<u64>,
    features: Option<u64>,
    /// The saved input of a crash, leak or hang.
    artifact: Option<String>,
}

pub fn run(layout: &Layout, args: &FuzzArgs) -> Result<()> {
    let fuzz_dir = layout.root().join("fuzz");
    let all = list_targets(&fuzz_dir)?;
    let every = args.targets.is_empty();
    let targets = if every {
        all
    } else {
        for t in &args.targets {
            if !all.contains(t) {
                bail!("no fuzz target {t:?} (targets: {})", all.join(", "));
            }
        }
        args.targets.clone()
    };
    ensure_cargo_fuzz()?;
    let sanitizer = build(layout, (!every).then_some(&targets[..]), args.sanitizer)?;
    let mut rows = Vec::new();
    for target in &targets {
        let outcome = run_target(layout, &fuzz_dir, target, sanitizer, args.secs)?;
        rows.push((target.clone(), outcome));
    }
    print!("{}", table(&rows, args.secs, sanitizer));
    let crashed: Vec<&str> = rows
        .iter()
        .filter(|(_, o)| o.artifact.is_some())
        .map(|(t, _)| t.as_str())
        .collect();
    if !crashed.is_empty() {
        bail!(
            "fuzz target(s) crashed: {} (inputs under fuzz/artifacts/)",
            crashed.join(", ")
        );
    }
    Ok(())
}

/// The targets, one per file in `fuzz/fuzz_targets/`.
fn list_targets(fuzz_dir: &Path) -> Result<Vec<String>> {
    let dir = fuzz_dir.join("fuzz_targets");
    let mut targets: Vec<String> = fs::read_dir(&dir)
        .context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".rs").map(String::from)
        })
        .collect();
    targets.sort();
    Ok(targets)
}

fn ensure_cargo_fuzz() -> Result<()> {
    let present = Command::new("cargo")
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !present {
        process::run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    Ok(())
}

/// `cargo fuzz` on the stable toolchain, with debug assertions and overflow checks (`-a`).
fn cargo_fuzz(layout: &Layout, sub: &str, sanitizer: Sanitizer) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(layout.root())
        .env("RUSTC_BOOTSTRAP", "1")
        .args(["fuzz", sub, "--debug-assertions", "--sanitizer"])
        .arg(sanitizer.name());
    cmd
}

/// Builds `targets` (`None`: all of them, in one cargo invocation that links in parallel);
/// returns the sanitizer that built. Without an explicit choice a failed AddressSanitizer
/// build is retried without a sanitizer.
fn build(
    layout: &Layout,
    targets: Option<&[String]>,
    choice: Option<Sanitizer>,
) -> Result<Sanitizer> {
    let sanitizer = choice.unwrap_or(Sanitizer::Address);
    let build_with = |s: Sanitizer| match targets {
        None => process::run(&mut cargo_fuzz(layout, "build", s)),
        Some(targets) => targets.iter().try_for_each(|t| {
            let mut cmd = cargo_fuzz(layout, "build", s);
            process::run(cmd.arg(t))
        }),
    };
    match build_with(sanitizer) {
        Err(e) if choice.is_none() => {
            eprintln!("xtask: the AddressSanitizer build failed ({e}); retrying without");
            build_with(Sanitizer::None).map(|()| Sanitizer::None)
        }
        result => result.map(|()| sanitizer),
    }
}

/// Runs one target for `secs` seconds; its output goes to a log under `fuzz/target/`.
fn run_target(
    layout: &Layout,
    fuzz_dir: &Path,
    target: &str,
    sanitizer: Sanitizer,
    secs: u64,
) -> Result<Outcome> {
    // New inputs go to a scratch corpus; the seeds in fuzz/corpus stay as committed.
    let scratch = fuzz_dir.join("target/corpus").join(target);
    let seeds = fuzz_dir.join("corpus").join(target);
    fs::create_dir_all(&scratch).context(|| format!("creating {}", scratch.display()))?;
    let log_path = fuzz_dir.join("target").join(format!("{target}.log"));
    let log = fs::File::create(&log_path).context(|| format!("creating {}", log_path.display()))?;
    let mut cmd = cargo_fuzz(layout, "run", sanitizer);
    cmd.arg(target)
        .arg(&scratch)
        .args(seeds.is_dir().then_some(&seeds))
        .arg("--")
        .arg(format!("-max_total_time={secs}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_SECS}"))
        .arg("-print_final_stats=1")
        .stdout(log.try_clone().context(|| "duplicating the log".into())?)
        .stderr(log);
    eprintln!("$ {}  > {}", process::display(&cmd), log_path.display());
    let status = cmd
        .status()
        .context(|| format!("cannot run cargo fuzz for {target}"))?;
    let text = fs::read_to_string(&log_path).unwrap_or_default();
    let outcome = parse_log(&text);
    if !status.success() && outcome.artifact.is_none() {
        eprint!("{}", tail(&text, 40));
        bail!("cargo fuzz run {target} failed ({status}) without saving an input");
    }
    if let Some(a) = &outcome.artifact {
        eprint!("{}", tail(&text, 60));
        eprintln!("xtask: {target} crashed; input saved as {a}");
    }
    Ok(outcome)
}

/// Executions, coverage and the saved input from libFuzzer's output.
fn parse_log(text: &str) -> Outcome {
    let field = |line: &str, key: &str| -> Option<u64> {
        let rest = &line[line.find(key)? + key.len()..];
        rest.split_whitespace().next()?.parse().ok()
    };
    let mut o = Outcome::default();
    for line in text.lines() {
        if let Some(n) = field(line, "stat::number_of_executed_units:") {
            o.executions = Some(n);
        }
        if line.starts_with('#') && line.contains(" cov: ") {
            o.coverage = field(line, " cov:").or(o.coverage);
            o.features = field(line, " ft:").or(o.features);
        }
        if let Some(at) = line.find("Test unit written to ") {
            o.artifact = Some(
                line[at + "Test unit written to ".len()..]
                    .trim()
                    .to_string(),
            );
        }
    }
    o
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..].iter().map(|l| format!("{l}\n")).collect()
}

fn table(rows: &[(String, Outcome)], secs: u64, sanitizer: Sanitizer) -> String {
    let num = |n: Option<u64>| n.map_or_else(|| "-".to_string(), |n| n.to_string());
    let mut out = format!(
        "\nfuzzing, {secs} s per target, sanitizer {}:\n{:<14} {:>12} {:>8} {:>8}  crash\n",
        sanitizer.name(),
        "target",
        "executions",
        "cov",
        "ft"
    );
    for (target, o) in rows {
        out += &format!(
            "{:<14} {:>12} {:>8} {:>8}  {}\n",
            target,
            num(o.executions),
            num(o.coverage),
            num(o.features),
            o.artifact.as_deref().unwrap_or("none")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Result<FuzzArgs> {
        let v: Vec<String> = line.split_whitespace().map(String::from).collect();
        FuzzArgs::parse(&v)
    }

    #[test]
    fn arguments_are_time_sanitizer_and_targets() {
        let a = args("").unwrap();
        assert_eq!(
            (a.secs, a.sanitizer, a.targets.len()),
            (DEFAULT_SECS, None, 0)
        );
        let a = args("--time 10 config --sanitizer=none ept").unwrap();
        assert_eq!(a.secs, 10);
        assert_eq!(a.sanitizer, Some(Sanitizer::None));
        assert_eq!(a.targets, ["config", "ept"]);
        assert_eq!(args("--time=300").unwrap().secs, 300);
        assert!(args("--time 0").is_err());
        assert!(args("--time").is_err());
        assert!(args("--time x").is_err());
        assert!(args("--sanitizer memory").is_err());
        assert!(args("--jobs 2").is_err());
    }

    #[test]
    fn log_gives_executions_coverage_and_the_crash_input() {
        let clean = "\
#2	INITED cov: 10 ft: 12 corp: 1/1b exec/s: 0 rss: 30Mb
#4096	pulse  cov: 90 ft: 120 corp: 9/99b lim: 4 exec/s: 2048 rss: 31Mb
#5000	DONE   cov: 97 ft: 130 corp: 9/99b lim: 4 exec/s: 2500 rss: 31Mb
Done 5000 runs in 2 second(s)
stat::number_of_executed_units: 5000
stat::average_exec_per_sec:     2500
";
        let o = parse_log(clean);
        assert_eq!(
            o,
            Outcome {
                executions: Some(5000),
                coverage: Some(97),
                features: Some(130),
                artifact: None,
            }
        );
        let crash = "\
#77	NEW    cov: 40 ft: 41 corp: 3/9b lim: 4 exec/s: 0 rss: 30Mb L: 3/3 MS: 1 ChangeBit-
thread '<unnamed>' panicked at fuzz_targets/x.rs:3:5:
==1== ERROR: libFuzzer: deadly signal
artifact_prefix='/w/fuzz/artifacts/x/'; Test unit written to /w/fuzz/artifacts/x/crash-ab12
stat::number_of_executed_units: 78
";
        let o = parse_log(crash);
        assert_eq!(o.executions, Some(78));
        assert_eq!(o.coverage, Some(40));
        assert_eq!(
            o.artifact.as_deref(),
            Some("/w/fuzz/artifacts/x/crash-ab12")
        );
    }

    #[test]
    fn targets_are_the_files_in_fuzz_targets() {
        let layout = Layout::of_this_workspace();
        let targets = list_targets(&layout.root().join("fuzz")).unwrap();
        for t in ["config", "bzimage", "emulate", "platform", "ept"] {
            assert!(targets.iter().any(|x| x == t), "{t} missing");
        }
    }
}
