//! The console's commands, named as xl names them, and their arguments: what `parse` makes of
//! one line typed at the prompt. Errors are one-line messages for the user.
//!
//! It is not their execution, which needs the domains and lives in the monitor binary.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// A domain as the user names it: a number is a domain ID, anything else a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Id(u32),
    Name(String),
}

impl Target {
    fn parse(word: &str) -> Self {
        match word.parse() {
            Ok(id) if word.bytes().all(|b| b.is_ascii_digit()) => Target::Id(id),
            _ => Target::Name(word.to_string()),
        }
    }

    /// Whether this names the domain `id` called `name`.
    pub fn matches(&self, id: u32, name: &str) -> bool {
        match self {
            Target::Id(n) => *n == id,
            Target::Name(n) => n == name,
        }
    }
}

/// xentop's default delay between refreshes, in seconds.
pub const TOP_DELAY_DEFAULT: u32 = 3;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// An empty line.
    Nothing,
    Help,
    List,
    Info,
    Dmesg,
    Create {
        name: String,
        console: bool,
    },
    Console(Target),
    Shutdown {
        target: Target,
        wait: bool,
    },
    Destroy(Target),
    Pause(Target),
    Unpause(Target),
    Reboot(Target),
    /// `vcpu-list [NAME|ID...]`: the vCPUs of these domains, or of all.
    VcpuList(Vec<Target>),
    /// `vcpu-pin NAME|ID all CPUS [SOFT]`: the CPUs (bit n is CPU n) the domain may run on.
    VcpuPin {
        target: Target,
        cpus: u64,
    },
    /// `top [-b] [-i N] [-d SECS]`: without `-i`, batch mode prints forever and interactive
    /// mode refreshes until a key is pressed.
    Top {
        batch: bool,
        iterations: Option<u32>,
        delay_secs: u32,
    },
    /// `trace [on|off|dom ID|dom all|class MASK]`: the exit trace at run time.
    Trace(TraceSetting),
}

/// What `trace` changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceSetting {
    /// Shows the current setting.
    Show,
    On,
    Off,
    /// Only this domain, or every domain.
    Domain(Option<u32>),
    /// Only events of these classes (xentrace's `-e` mask, e.g. 0x0008f000 for HVM).
    Classes(u32),
}

/// The help text, one command per line.
pub const HELP: &str = "\
list                      list the domains (as xl list)
create NAME [-c]          start the VM of config NAME; -c attaches its console
console NAME|ID           attach to a guest's console; Ctrl-] returns here
shutdown NAME|ID [-w]     press the guest's ACPI power button; -w waits until it is off
destroy NAME|ID           stop a guest at once and free its memory
pause NAME|ID             stop scheduling a guest
unpause NAME|ID           schedule it again
reboot NAME|ID            destroy a guest and create it again from its config
top [-b] [-i N] [-d SECS] domains' CPU and memory use (as xentop); a key stops it
vcpu-list [NAME|ID...]    each guest vCPU's CPU, state, time and CPUs it may use
vcpu-pin NAME|ID all CPUS pin a guest to CPUS (an xl CPU list: 1, 0-3,^2, all)
info                      the host and the monitor
dmesg                     the monitor's recent log
trace [on|off|dom ID|dom all|class MASK]  the exit trace at run time
help                      this text
";

/// Parses one line.
pub fn parse(line: &str) -> Result<Command, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let Some((&name, args)) = words.split_first() else {
        return Ok(Command::Nothing);
    };
    match name {
        "help" | "?" => none(name, args, Command::Help),
        "list" => none(name, args, Command::List),
        "info" => none(name, args, Command::Info),
        "dmesg" => none(name, args, Command::Dmesg),
        "create" => {
            let (flags, rest) = split_flags(args);
            let console = only_flags(name, &flags, &["-c"])?.contains(&"-c");
            let [vm] = rest.as_slice() else {
                return Err(usage(name, "NAME [-c]"));
            };
            Ok(Command::Create {
                name: vm.to_string(),
                console,
            })
        }
        "shutdown" => {
            let (flags, rest) = split_flags(args);
            let wait = only_flags(name, &flags, &["-w"])?.contains(&"-w");
            let [vm] = rest.as_slice() else {
                return Err(usage(name, "NAME|ID [-w]"));
            };
            Ok(Command::Shutdown {
                target: Target::parse(vm),
                wait,
            })
        }
        "console" => one_target(name, args).map(Command::Console),
        "destroy" => one_target(name, args).map(Command::Destroy),
        "pause" => one_target(name, args).map(Command::Pause),
        "unpause" => one_target(name, args).map(Command::Unpause),
        "reboot" => one_target(name, args).map(Command::Reboot),
        "top" => top(args),
        "vcpu-pin" => vcpu_pin(args),
        "vcpu-list" => Ok(Command::VcpuList(
            args.iter().map(|a| Target::parse(a)).collect(),
        )),
        "trace" => trace(args).map(Command::Trace),
        _ => Err(format!("unknown command '{name}'; 'help' lists them")),
    }
}

fn usage(command: &str, args: &str) -> String {
    format!("usage: {command} {args}")
}

fn none(command: &str, args: &[&str], c: Command) -> Result<Command, String> {
    if args.is_empty() {
        Ok(c)
    } else {
        Err(format!("{command} takes no arguments"))
    }
}

fn split_flags<'a>(args: &[&'a str]) -> (Vec<&'a str>, Vec<&'a str>) {
    args.iter().partition(|a| a.starts_with('-'))
}

fn only_flags<'a, 'b>(
    command: &str,
    flags: &'b [&'a str],
    allowed: &[&str],
) -> Result<&'b [&'a str], String> {
    match flags.iter().find(|f| !allowed.contains(f)) {
        Some(f) => Err(format!("{command}: unknown option '{f}'")),
        None => Ok(flags),
    }
}

fn one_target(command: &str, args: &[&str]) -> Result<Target, String> {
    match args {
        [vm] if !vm.starts_with('-') => Ok(Target::parse(vm)),
        _ => Err(usage(command, "NAME|ID")),
    }
}

/// `vcpu-pin NAME|ID all CPUS [SOFT]`. A domain runs on one CPU at a time, so its vCPUs share
/// one hard affinity (`all`); soft affinity is not kept, so only `all` or `-` is taken for it.
fn vcpu_pin(args: &[&str]) -> Result<Command, String> {
    let (vm, vcpu, hard, soft) = match args {
        [vm, vcpu, hard] => (vm, vcpu, hard, None),
        [vm, vcpu, hard, soft] => (vm, vcpu, hard, Some(soft)),
        _ => return Err(usage("vcpu-pin", "NAME|ID all CPUS")),
    };
    if *vcpu != "all" {
        return Err(format!(
            "a guest's vCPUs share its CPUs (it runs on one at a time): give 'all', not '{vcpu}'"
        ));
    }
    if soft.is_some_and(|s| !matches!(*s, "all" | "-")) {
        return Err("soft affinity is not supported; give 'all' or leave it out".into());
    }
    let cpus = crate::config::cpulist::cpu_mask(&crate::config::Value::Str((*hard).into()))
        .map_err(|e| format!("vcpu-pin: {e}"))?;
    Ok(Command::VcpuPin {
        target: Target::parse(vm),
        cpus,
    })
}

fn trace(args: &[&str]) -> Result<TraceSetting, String> {
    let bad = || usage("trace", "[on|off|dom ID|dom all|class MASK]");
    Ok(match args {
        [] => TraceSetting::Show,
        ["on"] => TraceSetting::On,
        ["off"] => TraceSetting::Off,
        ["dom", "all"] => TraceSetting::Domain(None),
        ["dom", id] => TraceSetting::Domain(Some(id.parse().map_err(|_| bad())?)),
        ["class", mask] => TraceSetting::Classes(
            u32::from_str_radix(mask.trim_start_matches("0x"), 16).map_err(|_| bad())?,
        ),
        _ => return Err(bad()),
    })
}

fn top(args: &[&str]) -> Result<Command, String> {
    let mut batch = false;
    let mut iterations = None;
    let mut delay_secs = TOP_DELAY_DEFAULT;
    let mut it = args.iter();
    while let Some(&arg) = it.next() {
        match arg {
            "-b" => batch = true,
            "-i" | "-d" => {
                let n = it
                    .next()
                    .and_then(|v| v.parse::<u32>().ok())
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("top: {arg} needs a positive number"))?;
                if arg == "-i" {
                    iterations = Some(n);
                } else {
                    delay_secs = n;
                }
            }
            _ => return Err(usage("top", "[-b] [-i N] [-d SECS]")),
        }
    }
    Ok(Command::Top {
        batch,
        iterations,
        delay_secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vcpu_pin_takes_a_domain_all_and_a_cpu_list() {
        assert_eq!(
            parse("vcpu-pin web all 1"),
            Ok(Command::VcpuPin {
                target: Target::Name("web".into()),
                cpus: 0b10
            })
        );
        assert_eq!(
            parse("vcpu-pin 3 all 0-3,^1 all"),
            Ok(Command::VcpuPin {
                target: Target::Id(3),
                cpus: 0b1101
            })
        );
        assert!(parse("vcpu-pin web 0 1")
            .unwrap_err()
            .contains("give 'all'"));
        assert!(parse("vcpu-pin web all 1 2").unwrap_err().contains("soft"));
        assert_eq!(
            parse("vcpu-pin web all 99"),
            Err("vcpu-pin: CPU 99 is beyond the 64 the monitor supports".into())
        );
        assert!(parse("vcpu-pin web").unwrap_err().starts_with("usage"));
    }

    #[test]
    fn vcpu_list_takes_any_number_of_domains() {
        assert_eq!(parse("vcpu-list"), Ok(Command::VcpuList(Vec::new())));
        assert_eq!(
            parse("vcpu-list web 3"),
            Ok(Command::VcpuList(alloc::vec![
                Target::Name("web".into()),
                Target::Id(3)
            ]))
        );
    }

    fn name(n: &str) -> Target {
        Target::Name(n.into())
    }

    #[test]
    fn trace_settings() {
        assert_eq!(parse("trace"), Ok(Command::Trace(TraceSetting::Show)));
        assert_eq!(parse("trace on"), Ok(Command::Trace(TraceSetting::On)));
        assert_eq!(parse("trace off"), Ok(Command::Trace(TraceSetting::Off)));
        assert_eq!(
            parse("trace dom 3"),
            Ok(Command::Trace(TraceSetting::Domain(Some(3))))
        );
        assert_eq!(
            parse("trace dom all"),
            Ok(Command::Trace(TraceSetting::Domain(None)))
        );
        assert_eq!(
            parse("trace class 0x0008f000"),
            Ok(Command::Trace(TraceSetting::Classes(0x0008_F000)))
        );
        for bad in [
            "trace dom x",
            "trace class zz",
            "trace sideways",
            "trace on off",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_xl_commands() {
        assert_eq!(parse("  "), Ok(Command::Nothing));
        assert_eq!(parse("list"), Ok(Command::List));
        assert_eq!(parse("help"), Ok(Command::Help));
        assert_eq!(parse("info"), Ok(Command::Info));
        assert_eq!(parse("dmesg"), Ok(Command::Dmesg));
        assert_eq!(
            parse("create web -c"),
            Ok(Command::Create {
                name: "web".into(),
                console: true
            })
        );
        assert_eq!(
            parse("create -c web"),
            parse("create web -c"),
            "flags go anywhere"
        );
        assert_eq!(parse("console 3"), Ok(Command::Console(Target::Id(3))));
        assert_eq!(parse("console db"), Ok(Command::Console(name("db"))));
        assert_eq!(
            parse("shutdown -w db"),
            Ok(Command::Shutdown {
                target: name("db"),
                wait: true
            })
        );
        assert_eq!(parse("destroy 2"), Ok(Command::Destroy(Target::Id(2))));
        assert_eq!(parse("pause a"), Ok(Command::Pause(name("a"))));
        assert_eq!(parse("unpause a"), Ok(Command::Unpause(name("a"))));
        assert_eq!(parse("reboot a"), Ok(Command::Reboot(name("a"))));
    }

    #[test]
    fn top_options() {
        assert_eq!(
            parse("top"),
            Ok(Command::Top {
                batch: false,
                iterations: None,
                delay_secs: 3
            })
        );
        assert_eq!(
            parse("top -b -i 2 -d 1"),
            Ok(Command::Top {
                batch: true,
                iterations: Some(2),
                delay_secs: 1
            })
        );
        assert!(parse("top -i").is_err());
        assert!(parse("top -i 0").is_err());
        assert!(parse("top -i x").is_err());
        assert!(parse("top -x").is_err());
    }

    #[test]
    fn mistakes_are_explained() {
        assert_eq!(
            parse("frobnicate"),
            Err("unknown command 'frobnicate'; 'help' lists them".into())
        );
        assert_eq!(parse("destroy"), Err("usage: destroy NAME|ID".into()));
        assert_eq!(parse("destroy a b"), Err("usage: destroy NAME|ID".into()));
        assert_eq!(
            parse("create a -x"),
            Err("create: unknown option '-x'".into())
        );
        assert_eq!(parse("list -l"), Err("list takes no arguments".into()));
        assert!(parse("shutdown").is_err());
        assert!(parse("console -1").is_err());
    }

    #[test]
    fn targets_match_by_id_or_name() {
        assert!(Target::Id(2).matches(2, "x"));
        assert!(!Target::Id(2).matches(3, "2"));
        assert!(name("x").matches(9, "x"));
        assert_eq!(Target::parse("+5"), name("+5"));
        assert_eq!(
            Target::parse("99999999999"),
            name("99999999999"),
            "too big for an ID"
        );
    }
}
