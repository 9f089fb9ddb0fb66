//! The command line of `cargo xtask`: a subcommand, its `--flag`/`--flag VALUE`/`--flag=VALUE`
//! options and, for `run` and `test`, arguments after `--` passed on untouched.
//! Not a general argument parser: each subcommand lists the flags it takes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crate::cargo::Profile;
use crate::error::{bail, Result};
use crate::qemu::DEFAULT_MEM;

pub const USAGE: &str = "\
usage: cargo xtask COMMAND [OPTIONS]

commands:
  build [--debug]           build the monitor into build/hv.elf (prints its path last)
  run [OPTIONS] [-- QEMU ARGS]
                            boot the monitor and a Linux guest under QEMU, console on
                            this terminal (Ctrl-A X quits QEMU)
      --kernel FILE         guest kernel (default: Debian's cloud kernel, fetched once)
      --initrd FILE         guest initramfs (default: the busybox initramfs)
      --config FILE         VM config (default: one for the kernel and initramfs)
      --mem SIZE            memory of the emulated machine (default: 2G)
      --iso                 boot a GRUB ISO instead of QEMU's multiboot loader
      --bochs               boot the GRUB ISO under Bochs with Intel VT-x instead of
                            QEMU (serial console streamed here; Ctrl-C stops it)
      --kvm                 QEMU with KVM and -cpu host, where the machine offers nested
                            virtualization (the monitor then runs on the real VMX or SVM)
      --debug               debug build of the monitor
  iso [--out FILE] [--kernel FILE] [--initrd FILE] [--config FILE] [--debug]
                            make a bootable GRUB BIOS ISO (default: build/hv.iso)
  guest                     fetch the kernel, build the initramfs and build/linux.cfg,
                            and print their paths (the monitor is not built)
  test [-- TEST ARGS]       unit tests, artifacts, then the QEMU integration tests;
                            TEST ARGS go to the integration test binary (e.g. a filter)
  trace record [--out FILE] [--kernel FILE] [--initrd FILE] [--config FILE] [-- QEMU ARGS]
                            boot with trace=com2 (default: the Linux guest with hvtest=1,
                            which powers off) and keep the trace (default: build/trace.bin)
  trace report FILE         print a xenalyze-style exit summary per domain and vCPU and
                            write FILE's SVG plots next to it
  bench                     deterministic micro-benchmarks (-icount) and a Linux boot, with
                            and without the monitor; prints a table, writes build/bench.json
  fuzz [--time SECS] [--sanitizer address|none] [TARGET...]
                            run each cargo-fuzz target in fuzz/ (default: all) for SECS
                            seconds (default: 60); a table of executions, coverage and
                            crashes; fails on a crash (input kept in fuzz/artifacts/)
  help                      this text
";

/// A parsed command line.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Build { profile: Profile },
    Run(RunArgs),
    Iso(IsoArgs),
    Guest,
    Test { test_args: Vec<String> },
    Trace(TraceCommand),
    Bench,
    Fuzz(crate::fuzz::FuzzArgs),
    Help,
}

/// `cargo xtask trace ...`.
#[derive(Debug, PartialEq, Eq)]
pub enum TraceCommand {
    Record {
        guest: GuestArgs,
        out: Option<PathBuf>,
        qemu_args: Vec<String>,
    },
    Report {
        file: PathBuf,
    },
}

/// Files the user chose instead of the defaults.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct GuestArgs {
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub config: Option<PathBuf>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct RunArgs {
    pub profile: Profile,
    pub guest: GuestArgs,
    pub mem: String,
    pub iso: bool,
    pub bochs: bool,
    pub kvm: bool,
    pub qemu_args: Vec<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct IsoArgs {
    pub profile: Profile,
    pub guest: GuestArgs,
    pub out: Option<PathBuf>,
}

/// Parses the arguments after `cargo xtask`.
pub fn parse(args: &[String]) -> Result<Command> {
    let Some((command, rest)) = args.split_first() else {
        return Ok(Command::Help);
    };
    const GUEST: [&str; 3] = ["kernel", "initrd", "config"];
    match command.as_str() {
        "build" => {
            let opts = Options::parse(rest, &[], &["debug"], false)?;
            Ok(Command::Build {
                profile: opts.profile(),
            })
        }
        "run" => {
            let mut opts = Options::parse(
                rest,
                &[&GUEST[..], &["mem"]].concat(),
                &["debug", "iso", "bochs", "kvm"],
                true,
            )?;
            Ok(Command::Run(RunArgs {
                profile: opts.profile(),
                iso: opts.switches.contains("iso"),
                bochs: opts.switches.contains("bochs"),
                kvm: opts.switches.contains("kvm"),
                guest: opts.guest(),
                mem: opts
                    .values
                    .remove("mem")
                    .unwrap_or_else(|| DEFAULT_MEM.to_string()),
                qemu_args: opts.rest,
            }))
        }
        "iso" => {
            let mut opts =
                Options::parse(rest, &[&GUEST[..], &["out"]].concat(), &["debug"], false)?;
            Ok(Command::Iso(IsoArgs {
                profile: opts.profile(),
                guest: opts.guest(),
                out: opts.values.remove("out").map(PathBuf::from),
            }))
        }
        "guest" => {
            Options::parse(rest, &[], &[], false)?;
            Ok(Command::Guest)
        }
        "test" => {
            let opts = Options::parse(rest, &[], &[], true)?;
            Ok(Command::Test {
                test_args: opts.rest,
            })
        }
        "trace" => match rest {
            [sub, rest @ ..] if sub == "record" => {
                let mut opts = Options::parse(rest, &[&GUEST[..], &["out"]].concat(), &[], true)?;
                Ok(Command::Trace(TraceCommand::Record {
                    guest: opts.guest(),
                    out: opts.values.remove("out").map(PathBuf::from),
                    qemu_args: opts.rest,
                }))
            }
            [sub, file] if sub == "report" && !file.starts_with("--") => {
                Ok(Command::Trace(TraceCommand::Report {
                    file: PathBuf::from(file),
                }))
            }
            _ => bail!("usage: trace record [OPTIONS] [-- QEMU ARGS] | trace report FILE"),
        },
        "bench" => {
            Options::parse(rest, &[], &[], false)?;
            Ok(Command::Bench)
        }
        "fuzz" => Ok(Command::Fuzz(crate::fuzz::FuzzArgs::parse(rest)?)),
        "help" | "--help" | "-h" => Ok(Command::Help),
        other => bail!("unknown command {other:?}"),
    }
}

/// The options of one subcommand, checked against the flags it accepts.
struct Options {
    values: BTreeMap<String, String>,
    switches: BTreeSet<String>,
    rest: Vec<String>,
}

impl Options {
    fn parse(
        args: &[String],
        value_flags: &[&str],
        switch_flags: &[&str],
        takes_rest: bool,
    ) -> Result<Self> {
        let mut opts = Options {
            values: BTreeMap::new(),
            switches: BTreeSet::new(),
            rest: Vec::new(),
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            if arg == "--" {
                if !takes_rest {
                    bail!("this command takes no arguments after --");
                }
                opts.rest = args.cloned().collect();
                break;
            }
            let Some(flag) = arg.strip_prefix("--") else {
                bail!("unexpected argument {arg:?}");
            };
            let (name, inline) = match flag.split_once('=') {
                Some((name, value)) => (name, Some(value.to_string())),
                None => (flag, None),
            };
            if value_flags.contains(&name) {
                let value = match inline.or_else(|| args.next().cloned()) {
                    Some(v) if !v.is_empty() => v,
                    _ => bail!("--{name} needs a value"),
                };
                if opts.values.insert(name.to_string(), value).is_some() {
                    bail!("--{name} given twice");
                }
            } else if switch_flags.contains(&name) && inline.is_none() {
                if !opts.switches.insert(name.to_string()) {
                    bail!("--{name} given twice");
                }
            } else {
                bail!("unknown option --{name}");
            }
        }
        Ok(opts)
    }

    fn profile(&self) -> Profile {
        if self.switches.contains("debug") {
            Profile::Debug
        } else {
            Profile::Release
        }
    }

    fn guest(&mut self) -> GuestArgs {
        GuestArgs {
            kernel: self.values.remove("kernel").map(PathBuf::from),
            initrd: self.values.remove("initrd").map(PathBuf::from),
            config: self.values.remove("config").map(PathBuf::from),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(line: &str) -> Result<Command> {
        let args: Vec<String> = line.split_whitespace().map(String::from).collect();
        parse(&args)
    }

    #[test]
    fn build_is_release_unless_debug() {
        assert_eq!(
            parse_str("build").unwrap(),
            Command::Build {
                profile: Profile::Release
            }
        );
        assert_eq!(
            parse_str("build --debug").unwrap(),
            Command::Build {
                profile: Profile::Debug
            }
        );
        assert!(parse_str("build --release").is_err());
        assert!(parse_str("build --debug --debug").is_err());
        assert!(parse_str("build --debug=yes").is_err());
        assert!(parse_str("build -- x").is_err());
    }

    #[test]
    fn run_takes_files_memory_and_qemu_args() {
        let Command::Run(run) =
            parse_str("run --kernel k --initrd=i --mem 4G --iso -- -s -S").unwrap()
        else {
            panic!("not run");
        };
        assert_eq!(run.guest.kernel, Some(PathBuf::from("k")));
        assert_eq!(run.guest.initrd, Some(PathBuf::from("i")));
        assert_eq!(run.guest.config, None);
        assert_eq!(run.mem, "4G");
        assert!(run.iso && !run.bochs);
        assert_eq!(run.profile, Profile::Release);
        assert_eq!(run.qemu_args, ["-s", "-S"]);
    }

    #[test]
    fn run_defaults() {
        let Command::Run(run) = parse_str("run").unwrap() else {
            panic!("not run");
        };
        assert_eq!(run.guest, GuestArgs::default());
        assert_eq!((run.mem.as_str(), run.iso), ("2G", false));
        assert!(run.qemu_args.is_empty());
        let Command::Run(run) = parse_str("run --bochs --config p.cfg").unwrap() else {
            panic!("not run");
        };
        assert!(run.bochs);
        assert_eq!(run.guest.config, Some(PathBuf::from("p.cfg")));
    }

    #[test]
    fn missing_or_repeated_values_are_errors() {
        assert!(parse_str("run --kernel").is_err());
        assert!(parse_str("run --kernel=").is_err());
        assert!(parse_str("run --mem 1G --mem 2G").is_err());
        assert!(parse_str("run stray").is_err());
        assert!(parse_str("frobnicate").is_err());
    }

    #[test]
    fn iso_and_test() {
        let Command::Iso(iso) = parse_str("iso --out x.iso --config c.cfg").unwrap() else {
            panic!("not iso");
        };
        assert_eq!(iso.out, Some(PathBuf::from("x.iso")));
        assert_eq!(iso.guest.config, Some(PathBuf::from("c.cfg")));
        assert!(parse_str("iso --mem 1G").is_err());
        assert_eq!(
            parse_str("test -- linux --nocapture").unwrap(),
            Command::Test {
                test_args: vec!["linux".into(), "--nocapture".into()]
            }
        );
        assert!(parse_str("test linux").is_err());
        assert_eq!(parse_str("guest").unwrap(), Command::Guest);
        assert!(parse_str("guest --debug").is_err());
        assert_eq!(parse_str("").unwrap(), Command::Help);
    }

    #[test]
    fn trace_and_bench() {
        assert_eq!(
            parse_str("trace report build/trace.bin").unwrap(),
            Command::Trace(TraceCommand::Report {
                file: PathBuf::from("build/trace.bin")
            })
        );
        let Command::Trace(TraceCommand::Record {
            guest,
            out,
            qemu_args,
        }) = parse_str("trace record --out t.bin --config c.cfg -- -s").unwrap()
        else {
            panic!("not trace record");
        };
        assert_eq!(out, Some(PathBuf::from("t.bin")));
        assert_eq!(guest.config, Some(PathBuf::from("c.cfg")));
        assert_eq!(qemu_args, ["-s"]);
        assert!(parse_str("trace").is_err());
        assert!(parse_str("trace report").is_err());
        assert!(parse_str("trace report a b").is_err());
        assert!(parse_str("trace record --mem 1G").is_err());
        assert_eq!(parse_str("bench").unwrap(), Command::Bench);
        assert!(parse_str("bench --debug").is_err());
        assert_eq!(parse_str("--help").unwrap(), Command::Help);
    }
}
