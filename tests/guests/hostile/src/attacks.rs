//! The attacks by name, as the tests give them on the command line (`attack=NAME`). Each is one
//! function that returns when every result was architectural; the ones meant to end the guest
//! never return.

use crate::{apic, insns, io, memory, report, state, virtio};

/// An attack: its name and what runs it, with boot_params.
struct Attack(&'static str, fn(u64));

const ATTACKS: &[Attack] = &[
    // memory
    Attack("mem-scan", memory::scan),
    Attack("pt-nonexistent", memory::page_tables_to_nowhere),
    Attack("cr3-hole", memory::cr3_in_a_hole),
    Attack("fetch-hole", memory::fetch_from_a_hole),
    // instructions
    Attack("virt-insns", insns::virtualization_instructions),
    Attack("hypercall-random", insns::random_hypercalls),
    Attack("msr-sweep", insns::msr_sweep),
    Attack("cpuid-sweep", insns::cpuid_sweep),
    Attack("xsetbv", insns::xsetbv_invalid),
    Attack("cr-reserved", insns::reserved_bits),
    Attack("cache", insns::cache_control),
    Attack("port-sweep", io::port_sweep),
    Attack("string-io", io::string_io),
    Attack("mmio-flood", apic::mmio_flood),
    // interrupts
    Attack("ipi-storm", apic::ipi_storm),
    Attack("bad-vectors", apic::bad_vectors),
    Attack("eoi-empty", apic::eoi_with_nothing_in_service),
    Attack("timer-min", apic::shortest_timer),
    Attack("nmi", apic::self_nmi),
    Attack("init-self", apic::init_self),
    // state
    Attack("triple-fault", state::triple_fault),
    Attack("shutdown", state::shutdown),
    Attack("hlt-cli", state::halt_forever),
    Attack("spin-cli", state::spin_forever),
    Attack("reset-cf9", state::reset_cf9),
    Attack("reset-kbc", state::reset_kbc),
    // devices
    Attack("virtio-bad", virtio::malformed_queues),
    Attack("pci-config", io::pci_config),
];

/// Runs the attack named `name`, then powers off.
pub fn run(name: &[u8], boot_params: u64) -> ! {
    let Some(attack) = ATTACKS.iter().find(|a| a.0.as_bytes() == name) else {
        report::fail(format_args!(
            "no attack named {:?}",
            core::str::from_utf8(name).unwrap_or("?")
        ))
    };
    report::set_attack(attack.0);
    report::note(format_args!("starting"));
    (attack.1)(boot_params);
    report::done()
}
