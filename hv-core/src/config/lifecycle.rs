//! The lifecycle and scheduling keys of a VM config: whether it starts at boot (`autostart`),
//! what happens when it powers off, reboots or crashes (`on_poweroff`, `on_reboot`,
//! `on_crash`), its share of the CPU (`cpu_weight`, `cap`) and the physical CPUs it may run on
//! (`cpus`). Defaults are xl's (`docs/man/xl.cfg.5.pod.in`).
//!
//! It is not the rest of the VM's description (`VmConfig`) and it does not act on anything.

use super::cpulist;
use super::error::{truncated, ConfigError, ErrorKind};
use super::vm::{bounded, position};
use super::Config;

/// Xen's default credit-scheduler weight.
pub const WEIGHT_DEFAULT: u32 = 256;
/// Xen's largest weight.
pub const WEIGHT_MAX: u32 = 65_535;
/// The largest cap: 100% of each of `VCPUS_MAX` CPUs.
pub const CAP_MAX: u32 = 100 * super::vm::VCPUS_MAX;

/// What to do when the guest stops in a given way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Free the domain.
    Destroy,
    /// Free it and create it again from its config.
    Restart,
    /// Keep it, stopped, until it is destroyed.
    Preserve,
}

impl Action {
    const CHOICES: &'static str = "'destroy', 'restart' or 'preserve'";

    fn from_word(word: &str) -> Option<Self> {
        match word {
            "destroy" => Some(Self::Destroy),
            "restart" => Some(Self::Restart),
            "preserve" => Some(Self::Preserve),
            _ => None,
        }
    }
}

/// The lifecycle and scheduling settings of one VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifecycle {
    /// Created at boot; otherwise it waits for the console's `create`.
    pub autostart: bool,
    pub on_poweroff: Action,
    pub on_reboot: Action,
    pub on_crash: Action,
    /// Relative CPU share (1..=65535).
    pub cpu_weight: u32,
    /// The most CPU it may use, in percent of one CPU; 0 is no limit.
    pub cap: u32,
    /// The physical CPUs it may run on, by number (bit n is CPU n).
    pub cpus: u64,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self {
            autostart: true,
            on_poweroff: Action::Destroy,
            on_reboot: Action::Restart,
            on_crash: Action::Destroy,
            cpu_weight: WEIGHT_DEFAULT,
            cap: 0,
            cpus: cpulist::ALL,
        }
    }
}

impl Lifecycle {
    /// The keys `from_config` reads.
    pub const KNOWN_KEYS: &'static [&'static str] = &[
        "autostart",
        "on_poweroff",
        "on_reboot",
        "on_crash",
        "cpu_weight",
        "cap",
        "cpus",
    ];

    /// Checks and types the lifecycle settings of `config`.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let d = Self::default();
        Ok(Self {
            autostart: bounded(config, "autostart", 1, 0, 1)? == 1,
            on_poweroff: action(config, "on_poweroff", d.on_poweroff)?,
            on_reboot: action(config, "on_reboot", d.on_reboot)?,
            on_crash: action(config, "on_crash", d.on_crash)?,
            cpu_weight: narrow(bounded(
                config,
                "cpu_weight",
                WEIGHT_DEFAULT.into(),
                1,
                WEIGHT_MAX.into(),
            )?),
            cap: narrow(bounded(config, "cap", 0, 0, CAP_MAX.into())?),
            cpus: cpus(config)?,
        })
    }
}

fn cpus(config: &Config) -> Result<u64, ConfigError> {
    let Some(value) = config.get("cpus") else {
        return Ok(cpulist::ALL);
    };
    cpulist::cpu_mask(value).map_err(|message| {
        let kind = ErrorKind::BadSpec {
            key: "cpus",
            message,
        };
        config.error(position(config, "cpus"), kind)
    })
}

/// A value already bounded to fit in 32 bits.
fn narrow(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn action(config: &Config, key: &'static str, default: Action) -> Result<Action, ConfigError> {
    match config.get_string(key)? {
        None => Ok(default),
        Some(word) => Action::from_word(word).ok_or_else(|| {
            let kind = ErrorKind::NotAChoice {
                key,
                found: truncated(word),
                choices: Action::CHOICES,
            };
            config.error(position(config, key), kind)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn lifecycle(text: &str) -> Result<Lifecycle, alloc::string::String> {
        let config = parse("l.cfg", text).map_err(|e| alloc::format!("{e}"))?;
        Lifecycle::from_config(&config).map_err(|e| alloc::format!("{e}"))
    }

    #[test]
    fn defaults_are_xls() {
        assert_eq!(lifecycle("name = 'a'").unwrap(), Lifecycle::default());
        let d = Lifecycle::default();
        assert!(d.autostart);
        assert_eq!(
            (d.on_poweroff, d.on_reboot, d.on_crash),
            (Action::Destroy, Action::Restart, Action::Destroy)
        );
        assert_eq!((d.cpu_weight, d.cap, d.cpus), (256, 0, u64::MAX));
    }

    #[test]
    fn every_key_is_read() {
        let l = lifecycle(
            "autostart = 0\non_poweroff = 'preserve'\non_reboot = \"destroy\"\n\
             on_crash = 'restart'\ncpu_weight = 512\ncap = 50\ncpus = \"0-3\"\n",
        )
        .unwrap();
        assert_eq!(
            l,
            Lifecycle {
                autostart: false,
                on_poweroff: Action::Preserve,
                on_reboot: Action::Destroy,
                on_crash: Action::Restart,
                cpu_weight: 512,
                cap: 50,
                cpus: 0b1111,
            }
        );
        assert_eq!(lifecycle("cpus = [0, '2']").unwrap().cpus, 0b101);
    }

    #[test]
    fn bad_values_name_file_line_and_reason() {
        assert_eq!(
            lifecycle("name = 'a'\non_crash = 'reboot'").unwrap_err(),
            "l.cfg:2:12: 'on_crash' is 'reboot', expected one of 'destroy', 'restart' or 'preserve'"
        );
        assert_eq!(
            lifecycle("cpu_weight = 0").unwrap_err(),
            "l.cfg:1:14: 'cpu_weight' must be between 1 and 65535, found 0"
        );
        assert!(lifecycle("autostart = 2").is_err());
        assert!(lifecycle("cap = 6401").is_err());
        assert!(lifecycle("on_reboot = ['restart']").is_err());
        assert_eq!(
            lifecycle("name = 'a'\ncpus = \"1,x\"").unwrap_err(),
            "l.cfg:2:8: 'cpus': 'x' is not a CPU number or range"
        );
    }
}
