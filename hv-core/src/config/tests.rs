//! Tests of the whole configuration path: grammar, errors with their exact text, the typed
//! layer, and hostile input.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use super::*;

fn s(text: &str) -> Value {
    Value::Str(text.into())
}

fn n(value: u64, text: &str) -> Value {
    Value::Num {
        value,
        text: text.into(),
    }
}

fn ok(text: &str) -> Config {
    parse("t.cfg", text).unwrap_or_else(|e| panic!("{e}"))
}

/// The error message `parse` gives for `text`, in its displayed form.
fn err(text: &str) -> String {
    match parse("t.cfg", text) {
        Ok(c) => panic!("parsed: {:?}", c.settings()),
        Err(e) => e.to_string(),
    }
}

fn vm_err(text: &str) -> String {
    match parse_vm("vm.cfg", text) {
        Ok(vm) => panic!("parsed: {vm:?}"),
        Err(e) => e.to_string(),
    }
}

const LINUX: &str = r#"# PVH Linux guest
name = "linux-pvh"
type = "pvh"
kernel = "vmlinuz-6.6"
ramdisk = 'initrd.img'
memory = 512
maxmem = 1024
vcpus = 2
root = "/dev/xvda1 ro"
extra = "console=hvc0 earlyprintk=xen"
on_crash = "preserve"
disk = [ 'phy:/dev/vg/guest,xvda,w',
         'format=raw, vdev=hdc, access=ro, devtype=cdrom, target=/root/image.iso', ]
vif = [ 'mac=00:16:3E:74:3d:76,model=rtl8139,bridge=xenbr0', '' ]
serial = []
"#;

#[test]
fn realistic_config() {
    let config = ok(LINUX);
    let vm = VmConfig::from_config(&config).unwrap();
    assert_eq!(
        vm,
        VmConfig {
            name: "linux-pvh".into(),
            kernel: "vmlinuz-6.6".into(),
            ramdisk: Some("initrd.img".into()),
            memory_mib: 512,
            vcpus: 2,
            cmdline: "root=/dev/xvda1 ro console=hvc0 earlyprintk=xen".into(),
            kind: crate::config::KernelType::Pvh,
            modules: Vec::new(),
            disks: vec![
                crate::config::DiskSpec {
                    target: crate::config::DiskTarget::Phy("/dev/vg/guest".into()),
                    vdev: "xvda".into(),
                    read_only: false,
                },
                crate::config::DiskSpec {
                    target: crate::config::DiskTarget::Module("image.iso".into()),
                    vdev: "hdc".into(),
                    read_only: true,
                },
            ],
            vifs: vec![
                crate::config::VifSpec {
                    mac: Some([0x00, 0x16, 0x3E, 0x74, 0x3D, 0x76]),
                    bridge: "xenbr0".into(),
                },
                crate::config::VifSpec {
                    mac: None,
                    bridge: "xenbr0".into(),
                },
            ],
        }
    );
    let unknown: Vec<&str> = config
        .unknown_keys(VmConfig::KNOWN_KEYS)
        .map(|s| s.key.as_str())
        .collect();
    assert_eq!(unknown, ["maxmem", "on_crash", "serial"]);
    let disk = config.setting("disk").unwrap();
    assert_eq!(
        disk.key_pos,
        Position {
            line: 12,
            column: 1
        }
    );
    assert_eq!(
        disk.pos,
        Position {
            line: 12,
            column: 8
        }
    );
    assert_eq!(config.get_list("disk").unwrap().unwrap().len(), 2);
    assert_eq!(config.get_list("serial").unwrap(), Some(&[][..]));
    assert_eq!(
        config.get_string("vif").unwrap_err().to_string(),
        "t.cfg:14:7: 'vif' is a list but should be a single value"
    );
}

#[test]
fn statements_comments_and_separators() {
    let c = ok("a=1;b='x' ; c = \"y\"# comment\n\n;;\n# only a comment\nd.e_f9 = 2");
    let keys: Vec<&str> = c.settings().iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys, ["a", "b", "c", "d.e_f9"]);
    assert_eq!(c.get("b"), Some(&s("x")));
    assert_eq!(c.get("c"), Some(&s("y")));
    assert_eq!(c.get("d.e_f9"), Some(&n(2, "2")));
    assert_eq!(
        c.setting("d.e_f9").unwrap().pos,
        Position {
            line: 5,
            column: 10
        }
    );
    assert_eq!(
        c.end(),
        Position {
            line: 5,
            column: 11
        }
    );
}

#[test]
fn empty_and_comment_only_files() {
    for text in ["", "\n\n", "# nothing\n  # more\t\n", ";", "   "] {
        assert!(ok(text).settings().is_empty(), "{text:?}");
    }
    assert_eq!(
        vm_err("# nothing\n"),
        "vm.cfg:2:1: missing mandatory setting 'name'"
    );
}

#[test]
fn numbers_and_strings() {
    let c =
        ok("a = 0x1f\nb = 017\nc = 0\nd = '\\x41\\101\\t'\ne = \"0x10\"\nf = 18446744073709551615");
    assert_eq!(c.get("a"), Some(&n(31, "0x1f")));
    assert_eq!(c.get("b"), Some(&n(15, "017")));
    assert_eq!(c.get_u64("c").unwrap(), Some(0));
    assert_eq!(c.get_string("d").unwrap(), Some("AA\t"));
    assert_eq!(
        c.get_u64("e").unwrap(),
        Some(16),
        "a quoted number reads as a number"
    );
    assert_eq!(
        c.get_string("a").unwrap(),
        Some("0x1f"),
        "a number reads as its text"
    );
    assert_eq!(c.get_u64("f").unwrap(), Some(u64::MAX));
    assert_eq!(c.get_u64("missing").unwrap(), None);
}

#[test]
fn lists_nest_and_span_lines() {
    let c = ok("l = [\n  1, 'a',\n  [ [], [2,], ],\n\n  # comment\n  \"b\",\n]\nm = []\n");
    let expected = vec![
        n(1, "1"),
        s("a"),
        Value::List(vec![Value::List(vec![]), Value::List(vec![n(2, "2")])]),
        s("b"),
    ];
    assert_eq!(c.get("l"), Some(&Value::List(expected)));
    assert_eq!(c.get("m"), Some(&Value::List(vec![])));
    assert_eq!(
        c.get_u64("l").unwrap_err().to_string(),
        "t.cfg:1:5: 'l' is a list but should be a single value"
    );
}

#[test]
fn last_assignment_wins() {
    let c = ok("memory = 256\nname = 'a'\nmemory = '1024'\n");
    assert_eq!(c.get_u64("memory").unwrap(), Some(1024));
    assert_eq!(c.settings().len(), 2);
    assert_eq!(c.settings()[0].key, "memory", "first-assignment order");
    assert_eq!(c.setting("memory").unwrap().key_pos.line, 3);
    let c = ok("x = [1]\nx = 'now a string'");
    assert_eq!(c.get_string("x").unwrap(), Some("now a string"));
}

#[test]
fn append_strings_and_lists() {
    let c = ok("extra = 'console=hvc0'\nextra += ' quiet'\nextra += 3\n\
                disk = ['a']\ndisk += ['b', ['c']]\nnew += 'x'\nlist += []\n");
    assert_eq!(c.get_string("extra").unwrap(), Some("console=hvc0 quiet3"));
    let disk = [s("a"), s("b"), Value::List(vec![s("c")])];
    assert_eq!(c.get_list("disk").unwrap(), Some(&disk[..]));
    assert_eq!(
        c.get_string("new").unwrap(),
        Some("x"),
        "+= on an unset key assigns"
    );
    assert_eq!(c.get_list("list").unwrap(), Some(&[][..]));
    // A later '=' clears the '+=' mark.
    let c = ok("memory = 5\nmemory += 12\nvcpus += 2\nvcpus = 3");
    assert_eq!(c.get_string("memory").unwrap(), Some("512"));
    assert_eq!(c.get_u64("vcpus").unwrap(), Some(3));
}

#[test]
fn append_errors() {
    assert_eq!(
        err("a = 'x'\na += ['y']"),
        "t.cfg:2:6: can't '+=' a list to a single value or the reverse for 'a'"
    );
    assert_eq!(
        err("a = ['x']\na += 'y'"),
        "t.cfg:2:6: can't '+=' a list to a single value or the reverse for 'a'"
    );
    let c = ok("memory = 5\nmemory += 12");
    assert_eq!(
        c.get_u64("memory").unwrap_err().to_string(),
        "t.cfg:2:11: can't use '+=' with numbers for 'memory'"
    );
    let c = ok("vcpus += 2");
    assert_eq!(
        c.get_u64("vcpus").unwrap_err().to_string(),
        "t.cfg:1:10: can't use '+=' with numbers for 'vcpus'"
    );
    let long = "x".repeat(MAX_STRING_LEN);
    assert_eq!(
        err(&format!("a = '{long}'\na += 'y'")),
        format!("t.cfg:2:6: string is longer than {MAX_STRING_LEN} bytes")
    );
}

#[test]
fn syntax_errors_name_what_was_expected() {
    let cases = [
        (
            "name = 'x'\n\nkernel = ]",
            "t.cfg:3:10: expected a value after '=', found ']'",
        ),
        (
            "a += ;",
            "t.cfg:1:6: expected a value after '+=', found ';'",
        ),
        (
            "a = \n1",
            "t.cfg:1:5: expected a value after '=', found end of line",
        ),
        (
            "a =",
            "t.cfg:1:4: expected a value after '=', found end of file",
        ),
        (
            "type = pvh",
            "t.cfg:1:8: expected a value after '=', found unquoted word 'pvh'",
        ),
        (
            "a 1",
            "t.cfg:1:3: expected '=' or '+=' after the key, found a number",
        ),
        (
            "a\n= 1",
            "t.cfg:1:2: expected '=' or '+=' after the key, found end of line",
        ),
        (
            "a = 1 2",
            "t.cfg:1:7: expected end of line or ';' after the value, found a number",
        ),
        (
            "a = 'x' 'y'",
            "t.cfg:1:9: expected end of line or ';' after the value, found a string",
        ),
        (
            "a = 1 = 2",
            "t.cfg:1:7: expected end of line or ';' after the value, found '='",
        ),
        ("= 1", "t.cfg:1:1: expected a key, found '='"),
        ("'a' = 1", "t.cfg:1:1: expected a key, found a string"),
        ("a = 1\n]", "t.cfg:2:1: expected a key, found ']'"),
        (
            "l = [1,,2]",
            "t.cfg:1:8: expected a value or ']' in the list, found ','",
        ),
        (
            "l = [,]",
            "t.cfg:1:6: expected a value or ']' in the list, found ','",
        ),
        (
            "l = [1 2]",
            "t.cfg:1:8: expected ',' or ']' after a list element, found a number",
        ),
        (
            "l = [1,\n",
            "t.cfg:2:1: expected a value or ']' in the list, found end of file",
        ),
        (
            "l = [1\n\n",
            "t.cfg:3:1: expected ',' or ']' after a list element, found end of file",
        ),
        (
            "l = [a]",
            "t.cfg:1:6: expected a value or ']' in the list, found unquoted word 'a'",
        ),
        ("l = [1];[", "t.cfg:1:9: expected a key, found '['"),
    ];
    for (text, message) in cases {
        assert_eq!(err(text), message, "{text:?}");
    }
}

#[test]
fn lexical_errors() {
    let cases = [
        (
            "memory = 512 + 1",
            "t.cfg:1:14: unexpected '+' (xl.cfg is not Python: no expressions)",
        ),
        (
            "a = -1",
            "t.cfg:1:5: unexpected '-' (xl.cfg is not Python: no expressions)",
        ),
        (
            "a = (1)",
            "t.cfg:1:5: unexpected '(' (xl.cfg is not Python: no expressions)",
        ),
        ("a = {'k': 1}", "t.cfg:1:5: unexpected character '{'"),
        (
            "a = 1.5",
            "t.cfg:1:6: unexpected '.' (xl.cfg is not Python: no expressions)",
        ),
        (
            "a = 1:2",
            "t.cfg:1:6: unexpected ':' (xl.cfg is not Python: no expressions)",
        ),
        (
            "Name = 'x'",
            "t.cfg:1:1: unexpected character 'N' (keys are lowercase)",
        ),
        ("a = 'x'\0", "t.cfg:1:8: unexpected character '\\0'"),
        ("a = \u{1}", "t.cfg:1:5: unexpected character '\\u{1}'"),
        ("é = 1", "t.cfg:1:1: unexpected character 'é'"),
        (
            "a = 'abc\n'",
            "t.cfg:1:5: unterminated string (strings cannot span lines)",
        ),
        (
            "a = \"abc",
            "t.cfg:1:5: unterminated string (strings cannot span lines)",
        ),
        (
            "a = 'abc\\",
            "t.cfg:1:5: unterminated string (strings cannot span lines)",
        ),
        (
            "a = 'a\u{7f}'",
            "t.cfg:1:7: control character '\\u{7f}' in string",
        ),
        ("a = 'a\0'", "t.cfg:1:7: control character '\\0' in string"),
        ("a = 'ab\\q'", "t.cfg:1:8: unknown escape sequence '\\q'"),
        ("a = '\\xg'", "t.cfg:1:6: '\\x' escape without hex digits"),
        ("a = '\\x'", "t.cfg:1:6: '\\x' escape without hex digits"),
        ("a = '\\400'", "t.cfg:1:6: octal escape above '\\377'"),
        ("a = '\\0'", "t.cfg:1:6: escape gives a NUL byte"),
        ("a = 'x\\x00'", "t.cfg:1:7: escape gives a NUL byte"),
        (
            "a = '\\xff'",
            "t.cfg:1:5: string escapes do not form valid UTF-8",
        ),
        ("a = 512M", "t.cfg:1:5: invalid number '512M'"),
        ("a = 08", "t.cfg:1:5: invalid number '08'"),
        ("a = 0x", "t.cfg:1:5: invalid number '0x'"),
        (
            "a = 18446744073709551616",
            "t.cfg:1:5: number does not fit in 64 bits",
        ),
        (
            "a = 0x1ffffffffffffffff",
            "t.cfg:1:5: number does not fit in 64 bits",
        ),
    ];
    for (text, message) in cases {
        assert_eq!(err(text), message, "{text:?}");
    }
}

#[test]
fn hostile_input_hits_limits() {
    let ok_depth = format!("a = {}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
    assert!(parse("t.cfg", &ok_depth).is_ok());
    let deep = format!(
        "a = {}{}",
        "[".repeat(MAX_DEPTH + 1),
        "]".repeat(MAX_DEPTH + 1)
    );
    assert_eq!(
        err(&deep),
        format!("t.cfg:1:21: lists nested deeper than {MAX_DEPTH}")
    );
    let very_deep = format!("a = {}", "[".repeat(500_000));
    assert_eq!(
        err(&very_deep),
        format!("t.cfg:1:21: lists nested deeper than {MAX_DEPTH}")
    );

    let long = "é".repeat(MAX_STRING_LEN / 2 + 1);
    assert_eq!(
        err(&format!("a = '{long}'")),
        format!("t.cfg:1:5: string is longer than {MAX_STRING_LEN} bytes")
    );
    let big = "#".repeat(MAX_FILE_LEN + 1);
    assert_eq!(
        err(&big),
        format!(
            "t.cfg:1:1: file is too large ({} bytes, the limit is {MAX_FILE_LEN})",
            big.len()
        )
    );
    let huge_number = "9".repeat(10_000);
    assert_eq!(
        err(&format!("a = {huge_number}")),
        "t.cfg:1:5: number does not fit in 64 bits"
    );
    let huge_word = format!("{} 1", "k".repeat(10_000));
    assert_eq!(
        err(&huge_word),
        "t.cfg:1:10002: expected '=' or '+=' after the key, found a number"
    );
    let unquoted = format!("a = {}", "w".repeat(100));
    assert_eq!(
        err(&unquoted),
        format!(
            "t.cfg:1:5: expected a value after '=', found unquoted word '{}'",
            "w".repeat(32)
        )
    );
}

#[test]
fn long_runs_of_appends_stay_linear_and_bounded() {
    let c = ok(&"a += [1]\n".repeat(100_000));
    assert_eq!(c.get_list("a").unwrap().map(<[Value]>::len), Some(100_000));
    let text = "s += 'xxxxxxxx'\n".repeat(MAX_STRING_LEN / 8 + 1);
    let line = MAX_STRING_LEN / 8 + 1;
    assert_eq!(
        err(&text),
        format!("t.cfg:{line}:6: string is longer than {MAX_STRING_LEN} bytes")
    );
}

#[test]
fn windows_line_endings_work() {
    let c = ok("name = 'a'\r\nvcpus = 2\r\n");
    assert_eq!(c.get_u64("vcpus").unwrap(), Some(2));
}

const MINIMAL: &str = "name = 'vm'\nkernel = 'bzImage'\n";

fn vm(extra: &str) -> VmConfig {
    parse_vm("vm.cfg", &format!("{MINIMAL}{extra}")).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn typed_defaults() {
    let v = vm("");
    assert_eq!(
        v,
        VmConfig {
            name: "vm".into(),
            kernel: "bzImage".into(),
            ramdisk: None,
            memory_mib: 128,
            vcpus: 1,
            cmdline: String::new(),
            kind: crate::config::KernelType::Hvm,
            modules: Vec::new(),
            disks: Vec::new(),
            vifs: Vec::new(),
        }
    );
}

#[test]
fn typed_numbers_accept_strings_and_bounds() {
    assert_eq!(vm("memory = '512'\nvcpus = \"0x40\"").memory_mib, 512);
    assert_eq!(vm("memory = 16\nvcpus = 64").vcpus, 64);
    assert_eq!(vm("memory = 1048576").memory_mib, 1 << 20);
    let e = |extra: &str| vm_err(&format!("{MINIMAL}{extra}"));
    assert_eq!(
        e("memory = 15"),
        "vm.cfg:3:10: 'memory' must be between 16 and 1048576, found 15"
    );
    assert_eq!(
        e("memory = 0x100001"),
        "vm.cfg:3:10: 'memory' must be between 16 and 1048576, found 1048577"
    );
    assert_eq!(
        e("vcpus = 0"),
        "vm.cfg:3:9: 'vcpus' must be between 1 and 64, found 0"
    );
    assert_eq!(
        e("vcpus = 65"),
        "vm.cfg:3:9: 'vcpus' must be between 1 and 64, found 65"
    );
    assert_eq!(
        e("memory = '512M'"),
        "vm.cfg:3:10: 'memory' should be a number, found \"512M\""
    );
    assert_eq!(
        e("memory = ''"),
        "vm.cfg:3:10: 'memory' should be a number, found \"\""
    );
    assert_eq!(
        e("vcpus = [2]"),
        "vm.cfg:3:9: 'vcpus' is a list but should be a single value"
    );
}

#[test]
fn typed_strings() {
    assert_eq!(vm("ramdisk = 'initrd'").ramdisk.as_deref(), Some("initrd"));
    assert_eq!(vm("name = 42").name, "42", "atoms are strings");
    assert_eq!(
        vm_err("name = 'a'"),
        "vm.cfg:1:11: missing mandatory setting 'kernel'"
    );
    assert_eq!(
        vm_err("kernel = 'k'\n"),
        "vm.cfg:2:1: missing mandatory setting 'name'"
    );
    assert_eq!(
        vm_err("name = ''\nkernel = 'k'"),
        "vm.cfg:1:8: 'name' must not be empty"
    );
    assert_eq!(
        vm_err(&format!("{MINIMAL}ramdisk = ''")),
        "vm.cfg:3:11: 'ramdisk' must not be empty"
    );
    assert_eq!(
        vm_err("name = ['a']\nkernel = 'k'"),
        "vm.cfg:1:8: 'name' is a list but should be a single value"
    );
    assert_eq!(
        vm_err(&format!("{MINIMAL}extra = ['quiet']")),
        "vm.cfg:3:9: 'extra' is a list but should be a single value"
    );
}

#[test]
fn kernel_command_line_as_xl_builds_it() {
    assert_eq!(vm("root = '/dev/sda'").cmdline, "root=/dev/sda");
    assert_eq!(vm("extra = 'quiet'").cmdline, "quiet");
    assert_eq!(
        vm("root = '/dev/sda'\nextra = 'quiet'").cmdline,
        "root=/dev/sda quiet"
    );
    assert_eq!(vm("extra = 'a'\nextra += ' b'").cmdline, "a b");
    assert_eq!(
        vm("cmdline = 'console=ttyS0'\nroot = 'r'\nextra = 'e'").cmdline,
        "console=ttyS0"
    );
    assert_eq!(
        vm("cmdline = ''\nroot = 'r'").cmdline,
        "",
        "an empty cmdline still wins"
    );
}

/// A deterministic xorshift generator for the mutation test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Applies one random edit to `chars`: replace, insert, delete, or duplicate a run.
fn mutate(rng: &mut Rng, chars: &mut Vec<char>) {
    const ALPHABET: &[char] = &[
        '[', ']', ',', '=', '+', ';', '#', '\'', '"', '\\', 'x', '0', '7', '9', 'a', 'Z', '\n',
        '\t', '\r', ' ', '\0', '\u{1}', 'é', '-', '.', '(', ':',
    ];
    let at = rng.below(chars.len() + 1);
    let c = ALPHABET[rng.below(ALPHABET.len())];
    match rng.below(4) {
        0 if at < chars.len() => chars[at] = c,
        1 => chars.insert(at, c),
        2 if at < chars.len() => {
            chars.remove(at);
        }
        _ => {
            let len = rng.below(40);
            let run: Vec<char> = chars.iter().skip(at).take(len).copied().collect();
            let to = rng.below(chars.len() + 1);
            chars.splice(to..to, run);
        }
    }
}

#[test]
fn mutated_configs_never_panic_and_errors_point_inside_the_file() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut parsed, mut failed) = (0, 0);
    for _ in 0..4000 {
        let mut chars: Vec<char> = LINUX.chars().collect();
        for _ in 0..1 + rng.below(6) {
            mutate(&mut rng, &mut chars);
        }
        let text: String = chars.iter().collect();
        let result = parse("m.cfg", &text).and_then(|c| VmConfig::from_config(&c));
        let Err(e) = result else {
            parsed += 1;
            continue;
        };
        failed += 1;
        let lines: Vec<&str> = text.split('\n').collect();
        let line = lines
            .get(e.pos.line as usize - 1)
            .unwrap_or_else(|| panic!("{e} in {text:?}"));
        assert!(
            e.pos.column as usize <= line.chars().count() + 1,
            "{e} in {text:?}"
        );
        assert!(e
            .to_string()
            .starts_with(&format!("m.cfg:{}:{}: ", e.pos.line, e.pos.column)));
    }
    assert!(
        parsed > 100 && failed > 100,
        "parsed {parsed}, failed {failed}"
    );
}
