//! Headless QEMU runs for `trace record` and `bench`: the machine's COM1 on a pipe, watched for
//! a marker to time and a marker to stop at; QEMU is killed once the stop marker appears (the
//! monitor halts rather than powering off when its last domain stops). Not the interactive
//! `run` (see `qemu.rs`), which hands QEMU the terminal.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::boot::MONITOR_CMDLINE;
use crate::error::{bail, Context, Result};
use crate::process;
use crate::qemu::QEMU;

/// The CPU of deterministic runs: no RDRAND/RDSEED, whose results (and so the guest's path)
/// would differ from run to run.
pub const BENCH_CPU: &str = "max,-rdrand,-rdseed";
/// Guest-visible instruction counting: 1 ns of virtual time (one TSC tick) per instruction,
/// and no sleeping in halts.
pub const ICOUNT: [&str; 2] = ["-icount", "shift=0,sleep=off"];

/// QEMU without a display, COM1 on stdout.
fn base(cpu: &str) -> Command {
    let mut cmd = Command::new(QEMU);
    cmd.args([
        "-accel",
        "tcg",
        "-cpu",
        cpu,
        "-m",
        "2G",
        "-smp",
        "1",
        "-no-reboot",
    ])
    .args(["-display", "none", "-serial", "stdio", "-monitor", "none"]);
    cmd
}

/// The monitor with `modules`, its command line extended by `cmdline_extra`.
pub fn monitor(hv: &Path, modules: &[PathBuf], cmdline_extra: &str, cpu: &str) -> Result<Command> {
    let mut list = Vec::new();
    for m in modules {
        let text = m.to_string_lossy();
        if text.contains([',', ' ']) {
            bail!("QEMU cannot load module {text}: its path has a comma or a space");
        }
        list.push(text.into_owned());
    }
    let mut cmd = base(cpu);
    cmd.arg("-kernel")
        .arg(hv)
        .arg("-append")
        .arg(format!("{MONITOR_CMDLINE} {cmdline_extra}").trim_end())
        .arg("-initrd")
        .arg(list.join(","));
    Ok(cmd)
}

/// A kernel booted by QEMU itself, without the monitor.
pub fn direct(kernel: &Path, initrd: Option<&Path>, append: &str, cpu: &str) -> Command {
    let mut cmd = base(cpu);
    cmd.arg("-kernel").arg(kernel).arg("-append").arg(append);
    if let Some(initrd) = initrd {
        cmd.arg("-initrd").arg(initrd);
    }
    cmd
}

/// What a run printed and when.
pub struct Run {
    pub output: String,
    /// Time from starting QEMU to the first appearance of the timed marker.
    pub marker_at: Option<Duration>,
    pub elapsed: Duration,
}

/// What to watch for.
pub struct Watch<'a> {
    pub time_to: Option<&'a str>,
    /// The run ends (QEMU killed) at the first of these; or when QEMU exits.
    pub stop_at: &'a [&'a str],
    pub timeout: Duration,
    /// Copy COM1 to this process's stderr as it arrives.
    pub echo: bool,
}

/// Runs `cmd` until a stop marker, QEMU's exit or the timeout (an error).
pub fn run(mut cmd: Command, watch: &Watch) -> Result<Run> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    eprintln!("$ {}", process::display(&cmd));
    let start = Instant::now();
    let mut child = cmd.spawn().context(|| format!("cannot run {QEMU}"))?;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut bytes = Vec::new();
    let mut marker_at = None;
    let outcome = loop {
        let left = watch.timeout.saturating_sub(start.elapsed());
        match rx.recv_timeout(left.max(Duration::from_millis(1))) {
            Ok(chunk) => {
                if watch.echo {
                    let _ = std::io::stderr().write_all(&chunk);
                }
                bytes.extend_from_slice(&chunk);
                let text = String::from_utf8_lossy(&bytes);
                if marker_at.is_none() && watch.time_to.is_some_and(|m| text.contains(m)) {
                    marker_at = Some(start.elapsed());
                }
                if watch.stop_at.iter().any(|m| text.contains(m)) {
                    break Ok(());
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break Ok(()),
            Err(mpsc::RecvTimeoutError::Timeout) if start.elapsed() >= watch.timeout => {
                break Err(watch.timeout)
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    };
    let elapsed = start.elapsed();
    // Killing an exited QEMU fails harmlessly; waiting reaps it either way.
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    let output = String::from_utf8_lossy(&bytes).into_owned();
    if let Err(t) = outcome {
        bail!(
            "QEMU did not finish within {t:?}; last output:\n{}",
            tail(&output, 20)
        );
    }
    Ok(Run {
        output,
        marker_at,
        elapsed,
    })
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
