//! Fuzzes the `xl.cfg` parser (`hv_core::config::parse`) and the typed layer (`parse_vm`,
//! `VmConfig::from_config`) with arbitrary text.
//!
//! Invariants: no panic; every error and every setting names a position inside the text (or
//! just past the end of its line); `Config::end` is the position after the last character;
//! keys are unique and findable; nesting and string lengths respect the documented limits;
//! `parse_vm` agrees with `parse` followed by `from_config`.
#![no_main]

use hv_core::config::{
    parse, parse_vm, Config, Position, Value, VmConfig, MAX_DEPTH, MAX_STRING_LEN,
};
use libfuzzer_sys::fuzz_target;

const FILE: &str = "fuzz.cfg";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let lines: Vec<usize> = text.split('\n').map(|l| l.chars().count()).collect();
    let inside = |pos: Position| {
        let line = usize::try_from(pos.line).unwrap_or(usize::MAX);
        line >= 1
            && lines
                .get(line - 1)
                .is_some_and(|&len| pos.column >= 1 && pos.column as usize <= len + 1)
    };
    match parse(FILE, &text) {
        Ok(config) => {
            check_config(&config, &lines, &inside);
            let typed = VmConfig::from_config(&config);
            if let Err(e) = &typed {
                assert!(inside(e.pos), "typed error outside the text: {e}");
                assert_eq!(e.file, FILE);
                let _ = e.to_string();
            }
            assert_eq!(parse_vm(FILE, &text), typed);
        }
        Err(e) => {
            assert!(inside(e.pos), "error outside the text: {e}");
            assert_eq!(e.file, FILE);
            let _ = e.to_string();
            assert!(parse_vm(FILE, &text).is_err());
        }
    }
});

fn check_config(config: &Config, lines: &[usize], inside: &dyn Fn(Position) -> bool) {
    let end = config.end();
    let last = lines.len();
    assert_eq!(
        (end.line as usize, end.column as usize),
        (last, lines[last - 1] + 1),
        "end is not just past the last character"
    );
    for s in config.settings() {
        assert!(inside(s.key_pos) && inside(s.pos), "setting {:?}", s.key);
        assert!(s.key_pos < s.pos, "value before its key: {:?}", s.key);
        assert_eq!(
            config.setting(&s.key),
            Some(s),
            "key not unique: {:?}",
            s.key
        );
        check_value(&s.value, 0);
    }
    let _ = config.unknown_keys(VmConfig::KNOWN_KEYS).count();
}

fn check_value(v: &Value, depth: usize) {
    match v {
        Value::Str(s) => assert!(s.len() <= MAX_STRING_LEN && !s.contains('\0')),
        Value::Num { value, text } => {
            assert!(!text.is_empty());
            assert_eq!(v.as_u64(), Some(*value));
        }
        Value::List(items) => {
            assert!(depth < MAX_DEPTH, "list nested deeper than MAX_DEPTH");
            items.iter().for_each(|i| check_value(i, depth + 1));
        }
    }
}
