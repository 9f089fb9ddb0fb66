//! `cargo xtask`: builds the monitor and the test guests, makes the guest kernel, initramfs,
//! config and GRUB ISO, boots them under QEMU, and runs the tests (see args::USAGE and
//! README.md). A host program, not part of the monitor.

mod args;
mod bench;
mod bochs;
mod boot;
mod bzimage;
mod cargo;
mod cpio;
mod elf;
mod error;
mod fuzz;
mod headless;
mod initramfs;
mod iso;
mod kernel;
mod layout;
mod mbtest;
mod phases;
mod process;
mod qemu;
mod svg;
mod trace;
mod vmlinux;

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use args::{Command, GuestArgs, IsoArgs, RunArgs, TraceCommand};
use boot::Modules;
use cargo::Profile;
use error::{Context, Error, Result};
use layout::Layout;
use phases::Phases;

fn main() {
    let args = std::env::args_os()
        .skip(1)
        .map(|a| {
            a.into_string()
                .map_err(|a| Error::new(format!("argument {a:?} is not UTF-8")))
        })
        .collect::<Result<Vec<_>>>()
        .and_then(|a| args::parse(&a));
    let command = match args {
        Ok(command) => command,
        Err(e) => {
            eprintln!("xtask: {e}\n\n{}", args::USAGE);
            std::process::exit(2);
        }
    };
    if let Err(e) = dispatch(&Layout::of_this_workspace(), command) {
        eprintln!("xtask: error: {e}");
        std::process::exit(1);
    }
}

fn dispatch(layout: &Layout, command: Command) -> Result<()> {
    match command {
        Command::Build { profile } => {
            let hv = build_monitor(layout, profile)?;
            println!("{}", hv.display());
            Ok(())
        }
        Command::Run(run_args) => run(layout, run_args),
        Command::Iso(iso_args) => {
            let out = make_iso(layout, iso_args)?;
            println!("{}", out.display());
            Ok(())
        }
        Command::Guest => {
            let (kernel, initrd) = default_guest(layout)?;
            for path in [kernel, initrd, layout.linux_cfg()] {
                println!("{}", path.display());
            }
            Ok(())
        }
        Command::Test { test_args } => test(layout, &test_args),
        Command::Trace(t) => trace_command(layout, t),
        Command::Bench => {
            let json = run_bench(layout)?;
            println!("{}", json.display());
            Ok(())
        }
        Command::Fuzz(fuzz_args) => fuzz::run(layout, &fuzz_args),
        Command::Help => {
            print!("{}", args::USAGE);
            Ok(())
        }
    }
}

/// Builds the monitor and copies it to build/hv.elf.
fn build_monitor(layout: &Layout, profile: Profile) -> Result<PathBuf> {
    let exe = cargo::build(layout.root(), &cargo::MONITOR, profile)?;
    let dest = layout.hv_elf();
    copy_artifact(&exe, &dest)?;
    Ok(dest)
}

/// Builds the probe guest and wraps it into build/probe.bzImage.
fn build_probe(layout: &Layout) -> Result<PathBuf> {
    let exe = cargo::build(layout.root(), &cargo::PROBE, Profile::Release)?;
    let elf = fs::read(&exe).context(|| format!("reading {}", exe.display()))?;
    let image =
        bzimage::wrap(&elf).context(|| format!("wrapping {} into a bzImage", exe.display()))?;
    let dest = layout.probe_bzimage();
    process::write_atomically(&dest, &image)?;
    Ok(dest)
}

/// The hostile test guest (build/hostile.bzImage): canary and attacker of the hostile suite.
const HOSTILE: cargo::BinSpec = cargo::BinSpec {
    package: "hostile",
    bin: "hostile",
    feature: "guest",
};

/// Builds the hostile guest and wraps it into build/hostile.bzImage, as the probe.
fn build_hostile(layout: &Layout) -> Result<PathBuf> {
    let exe = cargo::build(layout.root(), &HOSTILE, Profile::Release)?;
    let elf = fs::read(&exe).context(|| format!("reading {}", exe.display()))?;
    let image =
        bzimage::wrap(&elf).context(|| format!("wrapping {} into a bzImage", exe.display()))?;
    let dest = layout.build_dir().join("hostile.bzImage");
    process::write_atomically(&dest, &image)?;
    Ok(dest)
}

/// Builds the bench guest into build/bench.bzImage (for the monitor) and build/bench.elf (for
/// QEMU's multiboot loader); returns both.
fn build_bench(layout: &Layout) -> Result<(PathBuf, PathBuf)> {
    let exe = cargo::build(layout.root(), &cargo::BENCH, Profile::Release)?;
    let elf = fs::read(&exe).context(|| format!("reading {}", exe.display()))?;
    let image =
        bzimage::wrap(&elf).context(|| format!("wrapping {} into a bzImage", exe.display()))?;
    process::write_atomically(&layout.bench_bzimage(), &image)?;
    process::write_atomically(&layout.bench_elf(), &elf)?;
    Ok((layout.bench_bzimage(), layout.bench_elf()))
}

/// `trace record` boots the monitor with tracing on; `trace report` summarises a trace.
fn trace_command(layout: &Layout, t: TraceCommand) -> Result<()> {
    match t {
        TraceCommand::Record {
            guest,
            out,
            qemu_args,
        } => {
            let hv = build_monitor(layout, Profile::Release)?;
            let mut modules: Vec<PathBuf> = guest_modules(layout, &guest)?
                .iter()
                .map(|m| m.path.clone())
                .collect();
            if guest.config.is_none() {
                // The default config, but powering off once the guest is up.
                let cfg = bench::linux_config(&layout.bench_dir(), &modules[0], &modules[1])?;
                modules[2] = cfg;
            }
            let out = out.unwrap_or_else(|| layout.trace_bin());
            trace::record(&hv, &modules, &out, &qemu_args)?;
            println!("{}", out.display());
            Ok(())
        }
        TraceCommand::Report { file } => {
            for plot in trace::report(&file)? {
                eprintln!("xtask: wrote {}", plot.display());
            }
            Ok(())
        }
    }
}

fn run_bench(layout: &Layout) -> Result<PathBuf> {
    let hv = build_monitor(layout, Profile::Release)?;
    let (bench_bzimage, bench_elf) = build_bench(layout)?;
    let (kernel, initrd) = default_guest(layout)?;
    let out_dir = layout.bench_dir();
    bench::run(
        &bench::Inputs {
            hv: &hv,
            bench_bzimage: &bench_bzimage,
            bench_elf: &bench_elf,
            kernel: &kernel,
            initrd: &initrd,
            out_dir: &out_dir,
        },
        &layout.bench_json(),
    )
}

/// The default guest: the fetched kernel, a fresh initramfs and build/linux.cfg.
fn default_guest(layout: &Layout) -> Result<(PathBuf, PathBuf)> {
    let kernel = kernel::fetch(&layout.cache_dir(), &layout.vmlinuz())?;
    let initrd = layout.initramfs();
    initramfs::build(&initrd, &kernel::modules_dir(&layout.cache_dir()))?;
    write_config_for(layout, &kernel, &initrd)?;
    Ok((kernel, initrd))
}

/// The modules for `run` and `iso`: the user's files where given, the defaults otherwise,
/// and a config naming the chosen kernel and initramfs if the user gave none.
fn guest_modules(layout: &Layout, guest: &GuestArgs) -> Result<Modules> {
    let kernel = match &guest.kernel {
        Some(k) => k.clone(),
        None => kernel::fetch(&layout.cache_dir(), &layout.vmlinuz())?,
    };
    let initrd = match &guest.initrd {
        Some(i) => i.clone(),
        None => {
            initramfs::build(
                &layout.initramfs(),
                &kernel::modules_dir(&layout.cache_dir()),
            )?;
            layout.initramfs()
        }
    };
    let config = match &guest.config {
        Some(c) => c.clone(),
        None => write_config_for(layout, &kernel, &initrd)?,
    };
    Modules::new(&[&kernel, &initrd, &config])
}

/// build/linux.cfg for the default files; build/custom/linux.cfg for others, so the default
/// config of the contract is never overwritten.
fn write_config_for(layout: &Layout, kernel: &Path, initrd: &Path) -> Result<PathBuf> {
    let (k, i) = (boot::name_of(kernel)?, boot::name_of(initrd)?);
    let path = if (k.as_str(), i.as_str()) == ("vmlinuz", "initramfs.cpio") {
        layout.linux_cfg()
    } else {
        layout.custom_cfg_dir().join("linux.cfg")
    };
    process::write_atomically(&path, boot::linux_cfg(&k, &i).as_bytes())?;
    Ok(path)
}

fn make_iso(layout: &Layout, a: IsoArgs) -> Result<PathBuf> {
    let hv = build_monitor(layout, a.profile)?;
    let modules = guest_modules(layout, &a.guest)?;
    let out = a.out.unwrap_or_else(|| layout.iso());
    iso::make(&hv, &modules, &layout.iso_staging(), &out)?;
    Ok(out)
}

/// Boots under QEMU, handing it this process and the terminal; or under Bochs from the ISO,
/// streaming its serial console here.
fn run(layout: &Layout, a: RunArgs) -> Result<()> {
    if a.bochs && a.kvm {
        return Err(Error::new(
            "--kvm and --bochs exclude each other".to_string(),
        ));
    }
    if a.bochs {
        let mem = bochs::mem_mib(&a.mem)?;
        let iso = make_iso(
            layout,
            IsoArgs {
                profile: a.profile,
                guest: a.guest,
                out: None,
            },
        )?;
        return bochs::run(&iso, mem, &layout.build_dir().join("bochs"));
    }
    let accel = if a.kvm {
        qemu::check_kvm()?;
        qemu::Accel::Kvm
    } else {
        qemu::Accel::Tcg
    };
    let mut cmd = if a.iso {
        let iso = make_iso(
            layout,
            IsoArgs {
                profile: a.profile,
                guest: a.guest,
                out: None,
            },
        )?;
        qemu::command(&qemu::Media::Cdrom(&iso), accel, &a.mem, &a.qemu_args)?
    } else {
        let hv = build_monitor(layout, a.profile)?;
        let modules = guest_modules(layout, &a.guest)?;
        qemu::command(
            &qemu::Media::Kernel {
                monitor: &hv,
                modules: &modules,
            },
            accel,
            &a.mem,
            &a.qemu_args,
        )?
    };
    eprintln!("$ {}", process::display(&cmd));
    eprintln!("(Ctrl-A X quits QEMU; Ctrl-A H lists the other keys)");
    let err = cmd.exec();
    Err(Error::new(format!("cannot run {}: {err}", qemu::QEMU)))
}

/// The artifacts the integration tests read, by environment variable.
struct Artifacts {
    hv: PathBuf,
    probe: PathBuf,
    kernel: PathBuf,
    initrd: PathBuf,
    vmlinux: PathBuf,
    mbtest: PathBuf,
    bench: PathBuf,
    hostile: PathBuf,
    /// This program, for tests that run `trace report`.
    xtask: PathBuf,
}

impl Artifacts {
    fn env(&self) -> [(&'static str, &Path); 9] {
        [
            ("HV_ELF", &self.hv),
            ("HV_PROBE", &self.probe),
            ("HV_KERNEL", &self.kernel),
            ("HV_INITRD", &self.initrd),
            ("HV_VMLINUX", &self.vmlinux),
            ("HV_MBTEST", &self.mbtest),
            ("HV_BENCH", &self.bench),
            ("HV_HOSTILE", &self.hostile),
            ("HV_XTASK", &self.xtask),
        ]
    }
}

fn test(layout: &Layout, test_args: &[String]) -> Result<()> {
    let mut phases = Phases::default();
    phases.run("unit tests", || {
        let mut cmd = cargo::cargo();
        cmd.current_dir(layout.root())
            .args(["test", "--workspace", "--exclude", "tests"]);
        process::run(&mut cmd)
    });
    let hv = phases.run("build monitor", || build_monitor(layout, Profile::Release));
    let probe = phases.run("build probe", || build_probe(layout));
    let mbtest = phases.run("build mbtest", || mbtest::build(layout));
    let bench = phases.run("build bench guest", || build_bench(layout));
    let hostile = phases.run("build hostile guest", || build_hostile(layout));
    let xtask = std::env::current_exe().ok();
    let guest = phases.run("kernel and initramfs", || default_guest(layout));
    let vmlinux = phases.run("extract vmlinux", || {
        vmlinux::extract_cached(&layout.vmlinuz(), &layout.cache_dir().join("vmlinux"))
    });
    let qemu = phases.run("find QEMU", || qemu::version().map(|v| eprintln!("{v}")));
    match (
        hv,
        probe,
        guest,
        qemu,
        (vmlinux, mbtest),
        (bench, xtask, hostile),
    ) {
        (
            Some(hv),
            Some(probe),
            Some((kernel, initrd)),
            Some(()),
            (Some(vmlinux), Some(mbtest)),
            (Some((bench, _)), Some(xtask), Some(hostile)),
        ) => {
            let artifacts = Artifacts {
                hv,
                probe,
                kernel,
                initrd,
                vmlinux,
                mbtest,
                bench,
                hostile,
                xtask,
            };
            phases.run("integration tests", || {
                integration_tests(layout, &artifacts, test_args)
            });
        }
        _ => phases.skip("integration tests", "an earlier phase failed"),
    }
    if phases.summary() {
        Ok(())
    } else {
        Err(Error::new("some phases failed"))
    }
}

/// `cargo test -p tests --release` with the artifacts' absolute paths in HV_ELF, HV_PROBE,
/// HV_KERNEL, HV_INITRD, HV_VMLINUX, HV_MBTEST, HV_BENCH, HV_HOSTILE and HV_XTASK.
fn integration_tests(layout: &Layout, a: &Artifacts, test_args: &[String]) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut cmd = integration_test_command(a, test_args, cores);
    for (var, path) in a.env() {
        eprintln!("{var}={}", path.display());
    }
    process::run(cmd.current_dir(layout.root()))
}

/// Each integration test boots QEMU or Bochs, which keeps a core busy, so unless the user
/// says otherwise no more tests run at once than there are cores, and at most two. Every test
/// binary runs even when an earlier one fails (SVM and VMX results are both wanted).
fn integration_test_command(
    a: &Artifacts,
    test_args: &[String],
    cores: usize,
) -> std::process::Command {
    let mut cmd = cargo::cargo();
    cmd.args(["test", "-p", "tests", "--release", "--no-fail-fast", "--"]);
    cmd.envs(a.env());
    if !test_args
        .iter()
        .any(|arg| arg.starts_with("--test-threads"))
    {
        cmd.arg(format!("--test-threads={}", cores.clamp(1, 2)));
    }
    cmd.args(test_args);
    cmd
}

/// Copies a build output to its place under build/.
fn copy_artifact(from: &Path, to: &Path) -> Result<()> {
    let bytes = fs::read(from).context(|| format!("reading {}", from.display()))?;
    process::write_atomically(to, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifacts() -> Artifacts {
        Artifacts {
            hv: "/w/build/hv.elf".into(),
            probe: "/w/build/probe.bzImage".into(),
            kernel: "/w/build/cache/vmlinuz".into(),
            initrd: "/w/build/initramfs.cpio".into(),
            vmlinux: "/w/build/cache/vmlinux".into(),
            mbtest: "/w/build/mbtest.bin".into(),
            bench: "/w/build/bench.bzImage".into(),
            hostile: "/w/build/hostile.bzImage".into(),
            xtask: "/w/target/debug/xtask".into(),
        }
    }

    fn args(cmd: &std::process::Command) -> Vec<String> {
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn integration_tests_get_the_artifacts_and_at_most_two_threads() {
        let cmd = integration_test_command(&artifacts(), &["linux".into()], 8);
        assert_eq!(
            args(&cmd),
            [
                "test",
                "-p",
                "tests",
                "--release",
                "--no-fail-fast",
                "--",
                "--test-threads=2",
                "linux"
            ]
        );
        let env: Vec<_> = cmd
            .get_envs()
            .map(|(k, v)| (k.to_owned(), v.map(|v| v.to_owned())))
            .collect();
        for (var, path) in artifacts().env() {
            assert!(
                env.contains(&(var.into(), Some(path.as_os_str().to_owned()))),
                "{var}"
            );
        }
        let one_core = integration_test_command(&artifacts(), &[], 1);
        assert_eq!(
            args(&one_core).last().map(String::as_str),
            Some("--test-threads=1")
        );
    }

    #[test]
    fn the_user_may_choose_the_thread_count() {
        let user = ["--test-threads=1".to_string()];
        let cmd = integration_test_command(&artifacts(), &user, 2);
        assert_eq!(
            args(&cmd),
            [
                "test",
                "-p",
                "tests",
                "--release",
                "--no-fail-fast",
                "--",
                "--test-threads=1"
            ]
        );
    }
}
