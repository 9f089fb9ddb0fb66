//! Boot modules and the monitor's command line: a module is named by the base name of the first
//! word of its command line (GRUB's `module2 /boot/vmlinuz-6.1 vmlinuz` gives it the command
//! line `vmlinuz`; QEMU's `-initrd dir/vmlinuz` the command line `dir/vmlinuz`), and modules
//! whose name ends in `.cfg` are VM configs. Not the parsing of the boot loader's structures.

/// One module as the boot loader handed it over.
#[derive(Clone, Copy, Debug)]
pub struct Module<'a> {
    pub name: &'a str,
    pub data: &'a [u8],
}

/// The name of a module with command line `cmdline`.
pub fn module_name(cmdline: &str) -> &str {
    let first = cmdline.split_whitespace().next().unwrap_or("");
    first.rsplit('/').next().unwrap_or(first)
}

pub fn is_config(name: &str) -> bool {
    name.ends_with(".cfg")
}

pub fn find<'a>(modules: &[Module<'a>], name: &str) -> Option<Module<'a>> {
    modules.iter().copied().find(|m| m.name == name)
}

/// The value of `key=` on the monitor's command line.
pub fn option<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// Xen's `loglvl=` names.
pub fn log_level(value: Option<&str>) -> log::LevelFilter {
    match value {
        Some("none") => log::LevelFilter::Off,
        Some("error") => log::LevelFilter::Error,
        Some("warning") => log::LevelFilter::Warn,
        Some("debug") => log::LevelFilter::Debug,
        Some("all") => log::LevelFilter::Trace,
        _ => log::LevelFilter::Info,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_base_names_of_the_first_word() {
        assert_eq!(module_name("build/cache/vmlinuz"), "vmlinuz");
        assert_eq!(module_name("vmlinuz root=/dev/sda"), "vmlinuz");
        assert_eq!(module_name("/tmp/x/linux.cfg"), "linux.cfg");
        assert_eq!(module_name(""), "");
        assert!(is_config("linux.cfg") && !is_config("vmlinuz"));
    }

    #[test]
    fn command_line_options() {
        let c = "console=com1 loglvl=debug trace=com2";
        assert_eq!(option(c, "loglvl"), Some("debug"));
        assert_eq!(option(c, "trace"), Some("com2"));
        assert_eq!(option(c, "con"), None);
        assert_eq!(log_level(option(c, "loglvl")), log::LevelFilter::Debug);
        assert_eq!(log_level(None), log::LevelFilter::Info);
    }
}
