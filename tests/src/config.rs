//! VM configs in the xl.cfg syntax the monitor reads from `.cfg` modules. Not here: parsing
//! (the monitor's job); this only writes the few keys the tests use.

use std::fmt::Write;

/// One VM as the monitor's config describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    pub name: String,
    /// Base name of the module holding the kernel image.
    pub kernel: String,
    /// Base name of the module holding the initial ramdisk, if any.
    pub ramdisk: Option<String>,
    pub memory_mib: u32,
    pub vcpus: u32,
    /// The kernel command line, if any.
    pub extra: Option<String>,
    /// The boot protocol (`type`: "hvm", "pvh" or "multiboot"), if set.
    pub kind: Option<String>,
    /// Boot modules handed to the guest, each `NAME ARGS`.
    pub modules: Vec<String>,
    /// The physical CPUs it may run on (`cpus`, an xl CPU list), if set.
    pub cpus: Option<String>,
}

impl VmConfig {
    /// The default Linux VM, as xtask writes it to build/linux.cfg.
    pub fn linux() -> Self {
        VmConfig {
            name: "linux".into(),
            kernel: "vmlinuz".into(),
            ramdisk: Some("initramfs.cpio".into()),
            memory_mib: 256,
            vcpus: 1,
            extra: Some(
                "console=ttyS0 earlyprintk=serial,ttyS0 no_timer_check tsc=reliable panic=-1"
                    .into(),
            ),
            kind: None,
            modules: Vec::new(),
            cpus: None,
        }
    }

    /// The probe VM.
    pub fn probe() -> Self {
        VmConfig {
            name: "probe".into(),
            kernel: "probe.bzImage".into(),
            ramdisk: None,
            memory_mib: 64,
            vcpus: 1,
            extra: None,
            kind: None,
            modules: Vec::new(),
            cpus: None,
        }
    }

    /// Pins it to the physical CPUs of the xl CPU list `list`.
    pub fn with_cpus(mut self, list: &str) -> Self {
        self.cpus = Some(list.to_owned());
        self
    }

    /// Appends `words` to the kernel command line.
    pub fn with_extra(mut self, words: &str) -> Self {
        self.extra = Some(match self.extra.take() {
            Some(extra) if !extra.is_empty() => format!("{extra} {words}"),
            _ => words.to_owned(),
        });
        self
    }

    /// Sets the boot protocol (`type`).
    pub fn with_type(mut self, kind: &str) -> Self {
        self.kind = Some(kind.to_owned());
        self
    }

    /// Adds a boot module, `NAME ARGS`.
    pub fn with_module(mut self, module: &str) -> Self {
        self.modules.push(module.to_owned());
        self
    }

    /// File name of the config module; the monitor names modules by base name.
    pub fn file_name(&self) -> String {
        format!("{}.cfg", self.name)
    }

    /// The config file's text; an error if a value cannot be written as an xl.cfg string.
    pub fn render(&self) -> Result<String, String> {
        let mut text = String::new();
        string_line(&mut text, "name", &self.name)?;
        string_line(&mut text, "kernel", &self.kernel)?;
        if let Some(ramdisk) = &self.ramdisk {
            string_line(&mut text, "ramdisk", ramdisk)?;
        }
        if let Some(extra) = &self.extra {
            string_line(&mut text, "extra", extra)?;
        }
        writeln!(text, "memory = {}", self.memory_mib).map_err(|e| e.to_string())?;
        writeln!(text, "vcpus = {}", self.vcpus).map_err(|e| e.to_string())?;
        if let Some(kind) = &self.kind {
            string_line(&mut text, "type", kind)?;
        }
        if let Some(cpus) = &self.cpus {
            string_line(&mut text, "cpus", cpus)?;
        }
        if !self.modules.is_empty() {
            let mut items = Vec::with_capacity(self.modules.len());
            for module in &self.modules {
                quotable("modules", module)?;
                items.push(format!("\"{module}\""));
            }
            writeln!(text, "modules = [ {} ]", items.join(", ")).map_err(|e| e.to_string())?;
        }
        Ok(text)
    }
}

/// Appends `key = "value"`; the tests need no escapes, so values that would need one are refused.
fn string_line(text: &mut String, key: &str, value: &str) -> Result<(), String> {
    quotable(key, value)?;
    writeln!(text, "{key} = \"{value}\"").map_err(|e| e.to_string())
}

/// `value` can be written between double quotes without escapes.
fn quotable(key: &str, value: &str) -> Result<(), String> {
    if value.contains(['"', '\\', '\n', '\r']) {
        return Err(format!(
            "{key} = {value:?}: quotes, backslashes and line breaks cannot be written"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_config_is_the_contracts_default() {
        assert_eq!(
            VmConfig::linux().render().unwrap(),
            "name = \"linux\"\n\
             kernel = \"vmlinuz\"\n\
             ramdisk = \"initramfs.cpio\"\n\
             extra = \"console=ttyS0 earlyprintk=serial,ttyS0 no_timer_check tsc=reliable panic=-1\"\n\
             memory = 256\n\
             vcpus = 1\n"
        );
    }

    #[test]
    fn probe_config_has_no_ramdisk_or_command_line() {
        assert_eq!(
            VmConfig::probe().render().unwrap(),
            "name = \"probe\"\nkernel = \"probe.bzImage\"\nmemory = 64\nvcpus = 1\n"
        );
        assert_eq!(VmConfig::probe().file_name(), "probe.cfg");
    }

    #[test]
    fn extra_words_are_appended_with_one_space() {
        let linux = VmConfig::linux().with_extra("hvtest=1");
        assert!(linux.extra.unwrap().ends_with("panic=-1 hvtest=1"));
        assert_eq!(
            VmConfig::probe().with_extra("a=1").extra.as_deref(),
            Some("a=1")
        );
    }

    #[test]
    fn type_and_modules_are_written_after_the_rest() {
        let config = VmConfig::probe()
            .with_type("multiboot")
            .with_module("a.bin x=1")
            .with_module("b");
        assert!(config
            .render()
            .unwrap()
            .ends_with("vcpus = 1\ntype = \"multiboot\"\nmodules = [ \"a.bin x=1\", \"b\" ]\n"));
        assert!(VmConfig::probe().with_module("a\"b").render().is_err());
    }

    #[test]
    fn values_that_would_break_the_syntax_are_refused() {
        let quoted = VmConfig::probe().with_extra("x=\"y\"");
        assert!(quoted.render().unwrap_err().contains("extra"));
        let multiline = VmConfig {
            name: "a\nb".into(),
            ..VmConfig::probe()
        };
        assert!(multiline.render().is_err());
    }
}
