//! The result lines the integration tests read: `PROBE: <name>: <what happened> ok` for a check
//! that passed and `PROBE: <name>: FAIL (<detail>)` for one that did not.

use core::fmt;

use rt::serial;

/// Reports a passed check.
pub fn pass(name: &str, what: fmt::Arguments<'_>) {
    serial::line(format_args!("PROBE: {name}: {what} ok"));
}

/// Reports a failed check.
pub fn fail(name: &str, detail: fmt::Arguments<'_>) {
    serial::line(format_args!("PROBE: {name}: FAIL ({detail})"));
}

/// Reports a check that passed if `passed`, with the same description either way.
pub fn verdict(name: &str, passed: bool, what: fmt::Arguments<'_>) {
    if passed {
        pass(name, what);
    } else {
        fail(name, what);
    }
}
