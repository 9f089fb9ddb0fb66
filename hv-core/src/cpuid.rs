//! The CPUID a guest sees: host values filtered by a fixed policy. Features the monitor does not
//! virtualise are hidden (VMX, SVM, SMX, SGX, PT, RDT, MONITOR/MWAIT, thermal and power
//! management, perfmon), the ones it emulates are shown (x2APIC, TSC deadline), the topology is
//! a flat package of `vcpus` cores, and the hypervisor leaves say "hvmonitor" (0x40000000, with
//! the VMware-style frequency leaf 0x40000010) and "KVMKVMKVM" (0x40000100, with the PV features
//! the monitor implements: kvmclock, PV EOI and steal time) so that Linux treats the guest as
//! KVM, which allows x2APIC without interrupt remapping.
//!
//! It is not the CPUID exit handler: the caller passes the host CPUID and writes the registers.
//! Each call outside the hypervisor range also reads host leaf 0 or 0x80000000 (the range's
//! highest leaf), so a caller running nested may want its `host` to memoise those two.
//! CPUID.1:ECX.OSXSAVE[27] (and CPUID.7.0:ECX.OSPKE[4]) mirror CR4, so the host's bits come back
//! unchanged; the caller patches them from the guest's CR4.OSXSAVE and CR4.PKE.
//!
//! `CpuidTable` keeps a domain's answers for subleaf 0 of the low basic and extended leaves,
//! computed once, so that the common CPUID exits read the host's CPUID not at all.
//!
//! Leaves above the host's highest basic or extended leaf, and leaves outside the basic,
//! hypervisor and extended ranges, return zeros, as AMD does (AMD APM vol. 3, "CPUID"). Intel
//! instead returns the highest basic leaf's data (SDM vol. 2A, CPUID, "INPUT EAX = 0"), which
//! would leak the unfiltered leaf to the guest.

/// Guest-visible parameters of the CPUID policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuidPolicy {
    /// TSC frequency in kHz, reported in leaf 0x40000010 EAX.
    pub tsc_khz: u32,
    /// Local APIC timer frequency in kHz, reported in leaf 0x40000010 EBX.
    pub apic_timer_khz: u32,
    /// Number of vCPUs of the VM.
    pub vcpus: u32,
}

/// `bit` as a mask.
const fn b(bit: u32) -> u32 {
    1 << bit
}

/// A 12-byte vendor signature as the EBX, ECX, EDX of a hypervisor leaf.
const fn signature(sig: &[u8; 12]) -> [u32; 3] {
    [
        u32::from_le_bytes([sig[0], sig[1], sig[2], sig[3]]),
        u32::from_le_bytes([sig[4], sig[5], sig[6], sig[7]]),
        u32::from_le_bytes([sig[8], sig[9], sig[10], sig[11]]),
    ]
}

const HV_RANGE_FIRST: u32 = 0x4000_0000;
const HV_RANGE_LAST: u32 = 0x4FFF_FFFF;
/// Our vendor leaf and the highest leaf of its block.
const HV_VENDOR_LEAF: u32 = 0x4000_0000;
const HV_TIMING_LEAF: u32 = 0x4000_0010;
const HV_SIGNATURE: [u32; 3] = signature(b"hvmonitor\0\0\0");
/// The KVM-compatible block (Linux `kvm_cpuid_base` scans 0x40000000.. in 0x100 steps).
const KVM_VENDOR_LEAF: u32 = 0x4000_0100;
const KVM_FEATURES_LEAF: u32 = 0x4000_0101;
const KVM_SIGNATURE: [u32; 3] = signature(b"KVMKVMKVM\0\0\0");

const EXT_RANGE_FIRST: u32 = 0x8000_0000;

// CPUID.1:ECX (SDM vol. 2A, table 3-10).
const ECX1_MONITOR: u32 = b(3);
const ECX1_DS_CPL: u32 = b(4);
const ECX1_VMX: u32 = b(5);
const ECX1_SMX: u32 = b(6);
const ECX1_EIST: u32 = b(7);
const ECX1_TM2: u32 = b(8);
const ECX1_PDCM: u32 = b(15);
const ECX1_X2APIC: u32 = b(21);
const ECX1_TSC_DEADLINE: u32 = b(24);
const ECX1_HYPERVISOR: u32 = b(31);
// CPUID.1:EDX (SDM vol. 2A, table 3-11).
const EDX1_APIC: u32 = b(9);
const EDX1_ACPI: u32 = b(22);
const EDX1_TM: u32 = b(29);
const EDX1_PBE: u32 = b(31);
// CPUID.7.0 (SDM vol. 2A, CPUID leaf 07H).
/// CPUID.(EAX=0xD,ECX=1):EAX.XSAVES.
const EAX_D1_XSAVES: u32 = b(3);
/// IA32_TSC_ADJUST: the guest TSC is the host's, with nothing to adjust.
const EBX7_TSC_ADJUST: u32 = b(1);
const EBX7_SGX: u32 = b(2);
const EBX7_HLE: u32 = b(4);
const EBX7_RTM: u32 = b(11);
const EBX7_RDT_M: u32 = b(12);
const EBX7_RDT_A: u32 = b(15);
const EBX7_PT: u32 = b(25);
const ECX7_WAITPKG: u32 = b(5);
const ECX7_SGX_LC: u32 = b(30);
const EDX7_PCONFIG: u32 = b(18);
// CPUID.80000001:ECX (AMD APM vol. 3, E.4.2).
const ECX81_SVM: u32 = b(2);
const ECX81_SKINIT: u32 = b(12);
const ECX81_WDT: u32 = b(13);
// CPUID.80000008:ECX (AMD APM vol. 3, E.4.7): NC[7:0], ApicIdSize[15:12].
const ECX88_NC: u32 = 0xFF;
const ECX88_APIC_ID_SIZE: u32 = 0xF << 12;
// CPUID.0B/1F:ECX[15:8] level types (SDM vol. 2A, CPUID leaf 0BH).
const LEVEL_SMT: u32 = 1;
const LEVEL_CORE: u32 = 2;

/// How many leaves from the start of the basic and of the extended range `CpuidTable` keeps.
const TABLE_LEAVES: usize = 0x20;
/// CPUID leaf 0xD reports XSAVE area sizes for the XCR0 in force when it executes (SDM vol. 2A,
/// CPUID leaf 0DH): it is not a constant, so the table does not keep it.
const XSAVE_LEAF: u32 = 0xD;

/// One vCPU's answers to subleaf 0 of the first `TABLE_LEAVES` basic and extended leaves,
/// computed when its domain is created. The monitor runs on one CPU, whose CPUID answers do not
/// change but for CPUID.1:ECX.OSXSAVE and CPUID.7.0:ECX.OSPKE (which follow the host's CR4 and
/// which the caller replaces from the guest's CR4 anyway) and leaf 0xD, left out. Every other
/// leaf and subleaf goes through `guest_cpuid`.
pub struct CpuidTable {
    basic: [[u32; 4]; TABLE_LEAVES],
    extended: [[u32; 4]; TABLE_LEAVES],
}

impl CpuidTable {
    pub fn new(policy: &CpuidPolicy, apic_id: u32, host: &dyn Fn(u32, u32) -> [u32; 4]) -> Self {
        let range = |first: u32| {
            core::array::from_fn(|i| guest_cpuid(policy, apic_id, first + i as u32, 0, host))
        };
        Self {
            basic: range(0),
            extended: range(EXT_RANGE_FIRST),
        }
    }

    /// The answer to `leaf`.`subleaf` when the table has it.
    pub fn get(&self, leaf: u32, subleaf: u32) -> Option<[u32; 4]> {
        if subleaf != 0 || leaf == XSAVE_LEAF {
            return None;
        }
        let range = if leaf >= EXT_RANGE_FIRST {
            &self.extended
        } else {
            &self.basic
        };
        range.get((leaf & !EXT_RANGE_FIRST) as usize).copied()
    }
}

/// The guest's CPUID `leaf`.`subleaf` on the vCPU whose (x2)APIC ID is `apic_id`, as
/// `[eax, ebx, ecx, edx]`; `host` executes CPUID on the host.
pub fn guest_cpuid(
    policy: &CpuidPolicy,
    apic_id: u32,
    leaf: u32,
    subleaf: u32,
    host: &dyn Fn(u32, u32) -> [u32; 4],
) -> [u32; 4] {
    let vcpus = policy.vcpus.max(1);
    match leaf {
        HV_RANGE_FIRST..=HV_RANGE_LAST => hypervisor_leaf(policy, leaf),
        // MONITOR/MWAIT, thermal and power management, architectural perfmon, SVM.
        0x5 | 0x6 | 0xA | 0x8000_000A => [0; 4],
        _ if !host_has_leaf(leaf, host) => [0; 4],
        0x1 => leaf_1(host(leaf, subleaf), apic_id, vcpus),
        0x7 if subleaf == 0 => leaf_7(host(leaf, subleaf)),
        // XSAVES/XRSTORS and IA32_XSS: supervisor state components are not virtualised.
        0xD if subleaf == 1 => {
            let [eax, ebx, ecx, edx] = host(leaf, subleaf);
            [eax & !EAX_D1_XSAVES, ebx, ecx, edx]
        }
        0xB | 0x1F => topology(subleaf, apic_id, vcpus),
        0x8000_0001 => {
            let [eax, ebx, ecx, edx] = host(leaf, subleaf);
            [eax, ebx, ecx & !(ECX81_SVM | ECX81_SKINIT | ECX81_WDT), edx]
        }
        0x8000_0008 => {
            let [eax, ebx, ecx, edx] = host(leaf, subleaf);
            let ecx = (ecx & !(ECX88_NC | ECX88_APIC_ID_SIZE)) | ((vcpus - 1) & ECX88_NC);
            [eax, ebx, ecx, edx]
        }
        _ => host(leaf, subleaf),
    }
}

/// Whether `leaf` is within the host's basic or extended range.
fn host_has_leaf(leaf: u32, host: &dyn Fn(u32, u32) -> [u32; 4]) -> bool {
    let first = match leaf {
        0..HV_RANGE_FIRST => 0,
        EXT_RANGE_FIRST..=0x8FFF_FFFF => EXT_RANGE_FIRST,
        _ => return false,
    };
    leaf <= host(first, 0)[0]
}

fn leaf_1([eax, ebx, ecx, edx]: [u32; 4], apic_id: u32, vcpus: u32) -> [u32; 4] {
    let hidden =
        ECX1_MONITOR | ECX1_DS_CPL | ECX1_VMX | ECX1_SMX | ECX1_EIST | ECX1_TM2 | ECX1_PDCM;
    let ecx = (ecx & !hidden) | ECX1_X2APIC | ECX1_TSC_DEADLINE | ECX1_HYPERVISOR;
    // EBX[31:24] initial APIC ID, EBX[23:16] addressable logical processors; keep the CLFLUSH
    // line size and brand index.
    let ebx = (ebx & 0xFFFF) | ((apic_id & 0xFF) << 24) | (vcpus.min(0xFF) << 16);
    let edx = (edx & !(EDX1_ACPI | EDX1_TM | EDX1_PBE)) | EDX1_APIC;
    [eax, ebx, ecx, edx]
}

fn leaf_7([eax, ebx, ecx, edx]: [u32; 4]) -> [u32; 4] {
    let ebx = ebx
        & !(EBX7_TSC_ADJUST | EBX7_SGX | EBX7_HLE | EBX7_RTM | EBX7_RDT_M | EBX7_RDT_A | EBX7_PT);
    [
        eax,
        ebx,
        ecx & !(ECX7_WAITPKG | ECX7_SGX_LC),
        edx & !EDX7_PCONFIG,
    ]
}

/// Leaves 0xB and 0x1F: one thread per core, `vcpus` cores in one package.
fn topology(subleaf: u32, apic_id: u32, vcpus: u32) -> [u32; 4] {
    // Bits of the x2APIC ID that number the cores: ceil(log2(vcpus)).
    let core_bits = u32::BITS - (vcpus - 1).leading_zeros();
    let level = subleaf & 0xFF;
    match subleaf {
        0 => [0, 1, (LEVEL_SMT << 8) | level, apic_id],
        1 => [
            core_bits,
            vcpus & 0xFFFF,
            (LEVEL_CORE << 8) | level,
            apic_id,
        ],
        _ => [0, 0, level, apic_id],
    }
}

fn hypervisor_leaf(policy: &CpuidPolicy, leaf: u32) -> [u32; 4] {
    match leaf {
        HV_VENDOR_LEAF => with_signature(HV_TIMING_LEAF, HV_SIGNATURE),
        HV_TIMING_LEAF => [policy.tsc_khz, policy.apic_timer_khz, 0, 0],
        KVM_VENDOR_LEAF => with_signature(KVM_FEATURES_LEAF, KVM_SIGNATURE),
        KVM_FEATURES_LEAF => [
            crate::pvclock::CPUID_FEATURES
                | crate::pv_eoi::CPUID_FEATURE
                | crate::steal_time::CPUID_FEATURE,
            0,
            0,
            0,
        ],
        _ => [0; 4],
    }
}

fn with_signature(max_leaf: u32, [ebx, ecx, edx]: [u32; 3]) -> [u32; 4] {
    [max_leaf, ebx, ecx, edx]
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: CpuidPolicy = CpuidPolicy {
        tsc_khz: 2_500_000,
        apic_timer_khz: 1_000_000,
        vcpus: 4,
    };
    const MAX_BASIC: u32 = 0x1F;
    const MAX_EXT: u32 = 0x8000_0008;

    /// A host whose range leaves report `MAX_BASIC`/`MAX_EXT` and every other leaf returns
    /// `fill`.
    fn host_with(fill: [u32; 4]) -> impl Fn(u32, u32) -> [u32; 4] {
        move |leaf, _| match leaf {
            0 => [MAX_BASIC, 0x756e_6547, 0x6c65_746e, 0x4965_6e69],
            EXT_RANGE_FIRST => [MAX_EXT, 0, 0, 0],
            _ => fill,
        }
    }

    /// A host that returns a distinct pattern for every leaf and subleaf.
    fn pattern(leaf: u32, subleaf: u32) -> [u32; 4] {
        [leaf ^ 0x1111_0000, subleaf, leaf.rotate_left(8), !leaf]
    }

    fn host_pattern(leaf: u32, subleaf: u32) -> [u32; 4] {
        match leaf {
            0 | EXT_RANGE_FIRST => host_with([0; 4])(leaf, subleaf),
            _ => pattern(leaf, subleaf),
        }
    }

    fn cpuid(leaf: u32, subleaf: u32, host: &dyn Fn(u32, u32) -> [u32; 4]) -> [u32; 4] {
        guest_cpuid(&POLICY, 3, leaf, subleaf, host)
    }

    #[test]
    fn leaf_1_hides_and_shows_features() {
        let [_, _, ecx, edx] = cpuid(1, 0, &host_with([!0; 4]));
        for bit in [3, 4, 5, 6, 7, 8, 15] {
            assert_eq!(ecx & b(bit), 0, "ECX bit {bit}");
        }
        for bit in [22, 29, 31] {
            assert_eq!(edx & b(bit), 0, "EDX bit {bit}");
        }
        assert_eq!(
            ecx,
            !(b(3) | b(4) | b(5) | b(6) | b(7) | b(8) | b(15)),
            "OSXSAVE kept"
        );
        assert_ne!(edx & EDX1_APIC, 0);

        let [_, _, ecx, edx] = cpuid(1, 0, &host_with([0; 4]));
        assert_eq!(ecx, ECX1_X2APIC | ECX1_TSC_DEADLINE | ECX1_HYPERVISOR);
        assert_eq!(edx, EDX1_APIC);
    }

    #[test]
    fn leaf_1_ebx_has_apic_id_and_vcpus() {
        let host = host_with([0x0009_06A3, 0xAABB_0810, 0, 0]);
        let [eax, ebx, ..] = guest_cpuid(&POLICY, 0x25, 1, 0, &host);
        assert_eq!(eax, 0x0009_06A3);
        assert_eq!(ebx, 0x2504_0810);
        let policy = CpuidPolicy {
            vcpus: 64,
            ..POLICY
        };
        let [_, ebx, ..] = guest_cpuid(&policy, 0x1_0007, 1, 0, &host);
        assert_eq!(ebx >> 16, 0x0740);
    }

    #[test]
    fn power_perfmon_and_svm_leaves_are_zero() {
        for leaf in [5, 6, 0xA, 0x8000_000A] {
            assert_eq!(
                cpuid(leaf, 0, &host_with([!0; 4])),
                [0; 4],
                "leaf {leaf:#x}"
            );
        }
    }

    #[test]
    fn leaf_7_hides_unsupported_features() {
        let [eax, ebx, ecx, edx] = cpuid(7, 0, &host_with([!0; 4]));
        assert_eq!(eax, !0);
        assert_eq!(ebx, !(b(1) | b(2) | b(4) | b(11) | b(12) | b(15) | b(25)));
        assert_eq!(ecx, !(b(5) | b(30)));
        assert_eq!(edx, !b(18));
        assert_eq!(
            cpuid(7, 1, &host_pattern),
            pattern(7, 1),
            "other subleaves pass"
        );
    }

    #[test]
    fn xsaves_is_hidden() {
        let [eax, ebx, ecx, edx] = cpuid(0xD, 1, &host_with([!0; 4]));
        assert_eq!([eax, ebx, ecx, edx], [!b(3), !0, !0, !0]);
    }

    #[test]
    fn topology_is_flat() {
        for leaf in [0xB, 0x1F] {
            let host = host_with([!0; 4]);
            assert_eq!(guest_cpuid(&POLICY, 2, leaf, 0, &host), [0, 1, 0x100, 2]);
            assert_eq!(guest_cpuid(&POLICY, 2, leaf, 1, &host), [2, 4, 0x201, 2]);
            assert_eq!(guest_cpuid(&POLICY, 2, leaf, 2, &host), [0, 0, 2, 2]);
            assert_eq!(guest_cpuid(&POLICY, 300, leaf, 7, &host), [0, 0, 7, 300]);
        }
        let shift = |vcpus| {
            let policy = CpuidPolicy { vcpus, ..POLICY };
            guest_cpuid(&policy, 0, 0xB, 1, &host_with([0; 4]))[0]
        };
        assert_eq!(
            [shift(1), shift(2), shift(3), shift(5), shift(64)],
            [0, 1, 2, 3, 6]
        );
    }

    #[test]
    fn extended_leaves() {
        let [eax, ebx, ecx, edx] = cpuid(0x8000_0001, 0, &host_with([!0; 4]));
        assert_eq!([eax, ebx, edx], [!0; 3]);
        assert_eq!(ecx, !(b(2) | b(12) | b(13)));

        let [eax, _, ecx, _] = cpuid(0x8000_0008, 0, &host_with([0x3030, 0, 0x0003_F00F, 0]));
        assert_eq!(eax, 0x3030);
        assert_eq!(
            ecx, 0x0003_0003,
            "NC = vcpus - 1, ApicIdSize cleared, the rest kept"
        );
    }

    #[test]
    fn hypervisor_leaves() {
        let host = host_with([!0; 4]);
        let [eax, ebx, ecx, edx] = cpuid(0x4000_0000, 0, &host);
        assert_eq!(eax, 0x4000_0010);
        let mut sig = [0u8; 12];
        sig[..4].copy_from_slice(&ebx.to_le_bytes());
        sig[4..8].copy_from_slice(&ecx.to_le_bytes());
        sig[8..].copy_from_slice(&edx.to_le_bytes());
        assert_eq!(&sig, b"hvmonitor\0\0\0");

        assert_eq!(cpuid(0x4000_0010, 0, &host), [2_500_000, 1_000_000, 0, 0]);
        assert_eq!(
            cpuid(0x4000_0100, 0, &host),
            [0x4000_0101, 0x4b4d_564b, 0x564b_4d56, 0x4d]
        );
        assert_eq!(
            cpuid(0x4000_0101, 0, &host),
            [
                (1 << 0) | (1 << 3) | (1 << 5) | (1 << 6) | (1 << 24),
                0,
                0,
                0
            ],
            "kvmclock, kvmclock2, steal time, PV EOI and the stable bit"
        );
        for leaf in [
            0x4000_0001,
            0x4000_000F,
            0x4000_0011,
            0x4000_0200,
            0x4FFF_FFFF,
        ] {
            assert_eq!(cpuid(leaf, 0, &host), [0; 4], "leaf {leaf:#x}");
        }
    }

    #[test]
    fn other_leaves_pass_through() {
        for (leaf, subleaf) in [
            (0, 0),
            (2, 0),
            (4, 1),
            (0xD, 0),
            (0x1E, 0),
            (0x8000_0000, 0),
            (0x8000_0007, 0),
        ] {
            assert_eq!(
                cpuid(leaf, subleaf, &host_pattern),
                host_pattern(leaf, subleaf),
                "leaf {leaf:#x}"
            );
        }
    }

    #[test]
    fn table_answers_as_the_policy_does() {
        let table = CpuidTable::new(&POLICY, 3, &host_pattern);
        let probes = (0..0x30)
            .chain(0x4000_0000..0x4000_0002)
            .chain(0x8000_0000..0x8000_0030);
        let mut kept = 0;
        for leaf in probes.chain([0x7FFF_FFFF, 0xFFFF_FFFF]) {
            for subleaf in [0, 1] {
                if let Some(answer) = table.get(leaf, subleaf) {
                    assert_eq!(
                        answer,
                        cpuid(leaf, subleaf, &host_pattern),
                        "{leaf:#x}.{subleaf}"
                    );
                    kept += 1;
                }
            }
        }
        assert_eq!(
            kept,
            2 * TABLE_LEAVES - 1,
            "subleaf 0 of the low leaves but 0xD"
        );
        assert_eq!(table.get(XSAVE_LEAF, 0), None, "sizes follow XCR0");
        assert_eq!(table.get(0x4000_0000, 0), None);
    }

    #[test]
    fn out_of_range_leaves_are_zero() {
        for leaf in [
            MAX_BASIC + 1,
            0x3FFF_FFFF,
            MAX_EXT + 1,
            0x5000_0000,
            0x9000_0000,
            0xC000_0000,
        ] {
            assert_eq!(cpuid(leaf, 0, &host_pattern), [0; 4], "leaf {leaf:#x}");
        }
        // The topology leaf is not synthesised on a host without it.
        let old_host = |leaf: u32, sub: u32| {
            if leaf == 0 {
                [0xA, 0, 0, 0]
            } else {
                pattern(leaf, sub)
            }
        };
        assert_eq!(cpuid(0xB, 0, &old_host), [0; 4]);
        assert_eq!(cpuid(0xA, 0, &old_host), [0; 4]);
        assert_eq!(cpuid(4, 0, &old_host), pattern(4, 0));
    }
}
