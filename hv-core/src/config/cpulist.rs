//! xl's CPU lists, the value of `cpus` (`docs/man/xl.cfg.5.pod.in`, "CPU Allocation"): `"all"`,
//! or comma-separated CPU numbers and ranges, each of which may be excluded with `^`
//! (`"0-3,^1"`), taken left to right; or a list of such, one per vCPU (`["2", "3-4"]`). The
//! monitor runs a domain on one physical CPU at a time, so a per-vCPU list pins the domain to
//! the union of its entries.
//!
//! It is a parser to a bitmask of CPU numbers below 64; it does not know which CPUs exist.
//! NUMA node forms (`node:`, `nodes:`) are refused.

use alloc::format;
use alloc::string::String;

use super::Value;

/// The most CPUs a list may name (numbers 0 to 63).
pub const MAX_CPUS: u32 = 64;
/// Every CPU.
pub const ALL: u64 = u64::MAX;

/// The CPUs `value` names, as a bitmask (bit n is CPU n); why not, as a message naming the
/// offending item.
pub fn cpu_mask(value: &Value) -> Result<u64, String> {
    match value {
        Value::List(items) if items.is_empty() => Err("the list is empty".into()),
        Value::List(items) => items.iter().try_fold(0, |mask, item| {
            let text = item
                .as_atom()
                .ok_or_else(|| String::from("a list of lists is not a CPU list"))?;
            Ok(mask | parse(text)?)
        }),
        atom => parse(atom.as_atom().unwrap_or_default()),
    }
}

/// One CPU list: `all`, or items `N`, `N-M`, `^N`, `^N-M` separated by commas.
fn parse(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("no CPUs named".into());
    }
    let mut mask = 0u64;
    for item in text.split(',').map(str::trim) {
        let (exclude, range) = match item.strip_prefix('^') {
            Some(rest) => (true, rest),
            None => (false, item),
        };
        let bits = if range == "all" {
            ALL
        } else if range.starts_with("node") {
            return Err(format!("'{item}': NUMA node lists are not supported"));
        } else {
            range_mask(item, range)?
        };
        if exclude {
            mask &= !bits;
        } else {
            mask |= bits;
        }
    }
    if mask == 0 {
        return Err(format!("'{text}' leaves no CPU"));
    }
    Ok(mask)
}

/// `N` or `N-M` with N ≤ M < 64.
fn range_mask(item: &str, range: &str) -> Result<u64, String> {
    let number = |s: &str| -> Result<u32, String> {
        let n: u32 = s
            .trim()
            .parse()
            .map_err(|_| format!("'{item}' is not a CPU number or range"))?;
        if n >= MAX_CPUS {
            return Err(format!(
                "CPU {n} is beyond the {MAX_CPUS} the monitor supports"
            ));
        }
        Ok(n)
    };
    let (first, last) = match range.split_once('-') {
        Some((a, b)) => (number(a)?, number(b)?),
        None => {
            let n = number(range)?;
            (n, n)
        }
    };
    if first > last {
        return Err(format!("'{item}' is a range that runs backwards"));
    }
    let upper = if last == MAX_CPUS - 1 {
        ALL
    } else {
        (1u64 << (last + 1)) - 1
    };
    Ok(upper & !((1u64 << first) - 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn text(s: &str) -> Result<u64, String> {
        cpu_mask(&Value::Str(s.into()))
    }

    #[test]
    fn numbers_ranges_and_exclusions_left_to_right() {
        assert_eq!(text("all"), Ok(ALL));
        assert_eq!(text("0"), Ok(0b1));
        assert_eq!(text("3"), Ok(0b1000));
        assert_eq!(text("0-3"), Ok(0b1111));
        assert_eq!(text("0-3,^1"), Ok(0b1101));
        assert_eq!(text(" 1 , 5-6 "), Ok(0b110_0010));
        assert_eq!(text("all,^0"), Ok(ALL & !1));
        assert_eq!(
            text("^1,0-2"),
            Ok(0b111),
            "an exclusion applies to what precedes it"
        );
        assert_eq!(text("60-63"), Ok(0xF << 60));
    }

    #[test]
    fn a_per_vcpu_list_is_the_union() {
        let list = Value::List(vec![
            Value::Str("2".into()),
            Value::Num {
                value: 4,
                text: "4".into(),
            },
            Value::Str("6-7".into()),
        ]);
        assert_eq!(cpu_mask(&list), Ok(0b1101_0100));
    }

    #[test]
    fn bad_lists_say_what_is_wrong() {
        assert_eq!(text(""), Err("no CPUs named".into()));
        assert_eq!(text("x"), Err("'x' is not a CPU number or range".into()));
        assert_eq!(text("1-"), Err("'1-' is not a CPU number or range".into()));
        assert_eq!(
            text("3-1"),
            Err("'3-1' is a range that runs backwards".into())
        );
        assert_eq!(
            text("64"),
            Err("CPU 64 is beyond the 64 the monitor supports".into())
        );
        assert_eq!(text("0,^0"), Err("'0,^0' leaves no CPU".into()));
        assert_eq!(
            text("node:0"),
            Err("'node:0': NUMA node lists are not supported".into())
        );
        assert_eq!(
            cpu_mask(&Value::List(vec![])),
            Err("the list is empty".into())
        );
        assert_eq!(
            cpu_mask(&Value::List(vec![Value::List(vec![])])),
            Err("a list of lists is not a CPU list".into())
        );
    }
}
