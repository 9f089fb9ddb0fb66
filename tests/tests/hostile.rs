//! The hostile suite: each test boots the monitor with two VMs of the hostile guest
//! (`tests/guests/hostile`), a canary first (its console is the one the monitor shows) and an
//! attacker second, which runs the one attack named on its command line. The test asserts that
//! the monitor keeps running, that the canary's counter keeps advancing (before, during and for
//! a while after the attack, with no long gap), and that the attacker met exactly the fate the
//! attack expects: `powered off` when every result it checked was architectural (on a wrong
//! one it triple-faults instead), or the stop the attack provokes, or no stop at all.
//!
//! SECURITY.md lists the attacks and what each expects. Every attack runs on both backends, on
//! SVM under QEMU (`hostile_svm::NAME`) and on VMX under Bochs (`hostile_vmx::NAME`): an
//! attack takes 4 to 35 s under Bochs (about 2.5 min for the whole VMX list at two tests at a
//! time), so CI can afford all of them. `cargo xtask test -- hostile` runs both lists.

use std::time::{Duration, Instant};

use tests::{Artifacts, Boot, Emulator, Machine, VmConfig};

/// How the attacker must end.
#[derive(Clone, Copy, Debug)]
enum Fate {
    /// The monitor's stop line for the attacker starts with this (after `hv: domain attack
    /// (id 2): `).
    Stops(&'static str),
    /// It never stops (it halts or spins forever).
    Runs,
}

/// The monitor's line prefixes for the canary and the attacker.
const CANARY: &str = "hv: domain canary (id 1): ";
const ATTACKER: &str = "hv: domain attack (id 2): ";
/// What the monitor says when a domain stops.
const STOPS: [&str; 5] = [
    "powered off",
    "reset",
    "triple fault",
    "crashed:",
    "destroyed",
];

/// What a run asks of the canary, per emulator.
struct Limits {
    /// CANARY lines required after the attacker's fate line (or after the start, for `Runs`).
    after: u64,
    /// Largest allowed jump of the counter between two lines: periods of 10 ms the canary did
    /// not run.
    max_gap: u64,
    /// Time for the whole run.
    timeout: Duration,
}

fn limits(emulator: Emulator) -> Limits {
    match emulator {
        Emulator::Qemu => Limits {
            after: 200,
            max_gap: 100,
            timeout: Duration::from_secs(240),
        },
        Emulator::Bochs => Limits {
            after: 50,
            max_gap: 100,
            timeout: Duration::from_secs(400),
        },
    }
}

fn hostile_image() -> std::path::PathBuf {
    let path = std::env::var_os("HV_HOSTILE")
        .expect("HV_HOSTILE is not set: run the integration tests through `cargo xtask test`");
    std::path::PathBuf::from(path)
}

fn vm(name: &str, memory_mib: u32, extra: &str) -> String {
    let config = VmConfig {
        name: name.into(),
        kernel: "hostile.bzImage".into(),
        ramdisk: None,
        memory_mib,
        vcpus: 1,
        extra: Some(extra.into()),
        kind: None,
        modules: Vec::new(),
        cpus: None,
    };
    let mut text = config.render().unwrap_or_else(|e| panic!("{e}"));
    // A reset must end the attacker, not start it again with the same attack.
    text.push_str("on_reboot = \"destroy\"\n");
    text
}

/// The counter of a `CANARY n tick` line; None for the canary's other lines, and for a line
/// the monitor cut in two by printing its own line in the middle (a part lacks `tick`).
fn counter(line: &str) -> Option<u64> {
    let at = line.find("CANARY ")?;
    line[at + 7..].trim().strip_suffix(" tick")?.parse().ok()
}

/// The monitor's stop line for the domain whose lines start with `prefix`, if it stopped.
fn stop_line<'a>(output: &'a str, prefix: &str) -> Option<&'a str> {
    output.lines().find_map(|line| {
        let at = line.find(prefix)?;
        let rest = line[at + prefix.len()..].trim_end();
        STOPS.iter().any(|s| rest.starts_with(s)).then_some(rest)
    })
}

/// Boots the canary and the attacker for `attack` on `emulator` and checks the run.
fn run(attack: &str, emulator: Emulator, fate: Fate) {
    let artifacts = Artifacts::from_env();
    let limits = limits(emulator);
    let (canary_mib, attacker_mib, host) = match emulator {
        Emulator::Qemu => (32, 64, "1G"),
        Emulator::Bochs => (16, 32, "256M"),
    };
    let boot = Boot::new(&artifacts.hv)
        .on(emulator)
        .memory(host)
        .image("hostile.bzImage", &hostile_image())
        .raw_config("canary.cfg", &vm("canary", canary_mib, "canary"))
        .raw_config(
            "attack.cfg",
            &vm("attack", attacker_mib, &format!("attack={attack}")),
        );
    let started = Instant::now();
    let m = Machine::boot(boot).unwrap_or_else(|error| panic!("{error}"));
    m.expect(ATTACKER, Duration::from_secs(120));

    let (mut last, mut lines, mut worst_gap) = (None::<u64>, 0u64, 0u64);
    let mut fate_at: Option<(u64, String)> = None;
    loop {
        let left = limits.timeout.saturating_sub(started.elapsed());
        let line = m.expect_line("CANARY ", left.min(Duration::from_secs(60)));
        let Some(n) = counter(&line) else { continue };
        if let Some(prev) = last {
            assert!(n > prev, "the canary's counter went from {prev} to {n}");
            worst_gap = worst_gap.max(n - prev);
        }
        last = Some(n);
        lines += 1;
        if fate_at.is_none() && (lines % 16 == 0 || matches!(fate, Fate::Runs)) {
            let output = m.output();
            if let Some(stop) = stop_line(&output, ATTACKER) {
                fate_at = Some((n, stop.to_owned()));
            } else if matches!(fate, Fate::Runs) && lines >= 16 {
                fate_at = Some((n, String::new()));
            }
        }
        if let Some((from, _)) = &fate_at {
            if n >= from + limits.after {
                break;
            }
        }
    }
    let output = m.output();
    let (from, stop) = fate_at.expect("the loop ends only after the fate");
    eprintln!(
        "{attack} on {emulator:?}: {lines} canary lines, counter {from} at the fate, worst gap \
         {worst_gap} x 10 ms, {:.1} s; attacker: {}",
        started.elapsed().as_secs_f64(),
        if stop.is_empty() {
            "still running"
        } else {
            &stop
        }
    );
    assert!(
        !output.contains("hv: no domains left") && !output.contains("panicked"),
        "the monitor stopped:\n{}",
        tests::tail_lines(&output, 40)
    );
    assert!(
        stop_line(&output, CANARY).is_none(),
        "the canary was stopped: {:?}",
        stop_line(&output, CANARY)
    );
    assert!(
        worst_gap <= limits.max_gap,
        "the canary went {worst_gap} x 10 ms without running"
    );
    match fate {
        Fate::Stops(expected) => assert!(
            stop.starts_with(expected),
            "{attack}: the attacker {stop:?}, expected {expected:?} (a triple fault after a \
             powered-off attack is a wrong architectural result: boot the attacker first to \
             read its HOSTILE: FAIL line)"
        ),
        Fate::Runs => assert!(
            stop_line(&output, ATTACKER).is_none(),
            "{attack}: the attacker stopped: {:?}",
            stop_line(&output, ATTACKER)
        ),
    }
}

/// Every attack runs on both backends: `hostile_svm::NAME` on SVM under QEMU and
/// `hostile_vmx::NAME` on VMX under Bochs, with the same expected fate.
macro_rules! attacks {
    ($($test:ident: $attack:literal => $fate:expr;)+) => {
        mod hostile_svm {
            use super::*;
            $(
                #[test]
                fn $test() {
                    run($attack, Emulator::Qemu, $fate);
                }
            )+
        }

        mod hostile_vmx {
            use super::*;
            $(
                #[test]
                fn $test() {
                    run($attack, Emulator::Bochs, $fate);
                }
            )+
        }
    };
}

const OFF: Fate = Fate::Stops("powered off");
const TRIPLE: Fate = Fate::Stops("triple fault");
const RESET: Fate = Fate::Stops("reset");
const RUNS: Fate = Fate::Runs;

attacks! {
    // memory
    mem_scan: "mem-scan" => OFF;
    pt_nonexistent: "pt-nonexistent" =>
        Fate::Stops("crashed: cannot emulate the access to guest-physical 0xf0000000");
    cr3_hole: "cr3-hole" =>
        Fate::Stops("crashed: cannot emulate the access to guest-physical 0xf0000000");
    fetch_hole: "fetch-hole" =>
        Fate::Stops("crashed: instruction fetch from guest-physical 0xf0000000");
    // instructions
    virt_insns: "virt-insns" => OFF;
    hypercall_random: "hypercall-random" => OFF;
    msr_sweep: "msr-sweep" => OFF;
    cpuid_sweep: "cpuid-sweep" => OFF;
    xsetbv: "xsetbv" => OFF;
    cr_reserved: "cr-reserved" => OFF;
    cache: "cache" => OFF;
    port_sweep: "port-sweep" => OFF;
    string_io: "string-io" =>
        Fate::Stops("crashed: string I/O to port 0x80 is not emulated");
    mmio_flood: "mmio-flood" => OFF;
    // interrupts
    ipi_storm: "ipi-storm" => OFF;
    bad_vectors: "bad-vectors" => OFF;
    eoi_empty: "eoi-empty" => OFF;
    timer_min: "timer-min" => RUNS;
    nmi: "nmi" => OFF;
    init_self: "init-self" => OFF;
    // state
    triple_fault: "triple-fault" => TRIPLE;
    shutdown: "shutdown" => TRIPLE;
    hlt_cli: "hlt-cli" => RUNS;
    spin_cli: "spin-cli" => RUNS;
    reset_cf9: "reset-cf9" => RESET;
    reset_kbc: "reset-kbc" => RESET;
    // devices
    virtio_bad: "virtio-bad" => OFF;
    pci_config: "pci-config" => OFF;
}
