//! The VM-entry interruption-information format and its VM-exit twins (SDM Vol. 3C §25.8.3,
//! §25.9.2-25.9.3): encoding the event the core injects, turning an event whose delivery an
//! exit cut short (IDT-vectoring information) back into one for the next entry (§28.2.4), and
//! the interruptibility state an NMI injection needs.
//!
//! Pure encoding; the VMCS reads and writes are in `vcpu`.

use vcpu::Event;

use crate::guest::blocking;

pub const VALID: u32 = 1 << 31;
pub const DELIVER_ERROR_CODE: u32 = 1 << 11;
const VECTOR: u32 = 0xFF;
const TYPE_SHIFT: u32 = 8;
const TYPE_MASK: u32 = 0x7 << TYPE_SHIFT;

/// Interruption types (bits 10:8).
pub mod kind {
    pub const EXTERNAL: u32 = 0;
    pub const NMI: u32 = 2;
    pub const HARDWARE_EXCEPTION: u32 = 3;
    pub const SOFTWARE_INTERRUPT: u32 = 4;
    pub const PRIVILEGED_SOFTWARE_EXCEPTION: u32 = 5;
    pub const SOFTWARE_EXCEPTION: u32 = 6;
}

/// An event ready for the VM-entry fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Injection {
    /// VM-entry interruption-information.
    pub info: u32,
    /// VM-entry exception error code, meaningful with `DELIVER_ERROR_CODE`.
    pub error_code: u32,
    /// VM-entry instruction length, for software interrupts and exceptions.
    pub instruction_len: u32,
}

impl Injection {
    pub fn of(event: Event) -> Self {
        let (info, error_code) = match event {
            Event::Interrupt(v) => (VALID | kind::EXTERNAL << TYPE_SHIFT | u32::from(v), 0),
            Event::Nmi => (VALID | kind::NMI << TYPE_SHIFT | 2, 0),
            Event::Exception { vector, error_code } => {
                let base = VALID | kind::HARDWARE_EXCEPTION << TYPE_SHIFT | u32::from(vector);
                match error_code {
                    Some(code) => (base | DELIVER_ERROR_CODE, code),
                    None => (base, 0),
                }
            }
        };
        Self {
            info,
            error_code,
            instruction_len: 0,
        }
    }

    /// The event an exit interrupted, from the IDT-vectoring information and error code and
    /// the VM-exit instruction length; `None` when no event was being delivered. Bit 12 is
    /// undefined there and bits 30:12 must be zero on entry, so only vector, type, the
    /// error-code flag and valid are kept (SDM Vol. 3C §28.2.4).
    pub fn requeue(idt_vectoring: u32, error_code: u32, instruction_len: u32) -> Option<Self> {
        if idt_vectoring & VALID == 0 {
            return None;
        }
        let info = idt_vectoring & (VALID | DELIVER_ERROR_CODE | TYPE_MASK | VECTOR);
        let software = matches!(
            (info & TYPE_MASK) >> TYPE_SHIFT,
            kind::SOFTWARE_INTERRUPT
                | kind::PRIVILEGED_SOFTWARE_EXCEPTION
                | kind::SOFTWARE_EXCEPTION
        );
        Some(Self {
            info,
            error_code,
            instruction_len: if software { instruction_len } else { 0 },
        })
    }

    /// This injection for a guest whose CR0.PE is `protected`: an unrestricted guest in real
    /// mode must not be given an error code (SDM Vol. 3C §26.2.1.3).
    pub fn for_mode(self, protected: bool) -> Self {
        if protected {
            self
        } else {
            Self {
                info: self.info & !DELIVER_ERROR_CODE,
                ..self
            }
        }
    }
}

/// The guest interruptibility state for an entry that injects `info` (SDM Vol. 3C §27.3.1.5):
/// an NMI needs virtual-NMI blocking clear (an exit during an NMI's delivery leaves it set,
/// and the NMI is requeued), and some CPUs refuse it in an STI shadow, which the NMI's
/// delivery ends anyway (the handler's IRET does not restore it).
pub fn entry_interruptibility(info: u32, interruptibility: u32) -> u32 {
    if info & VALID != 0 && (info & TYPE_MASK) >> TYPE_SHIFT == kind::NMI {
        interruptibility & !(blocking::STI | blocking::NMI)
    } else {
        interruptibility
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_encode_vector_type_and_error_code() {
        assert_eq!(Injection::of(Event::Interrupt(0x30)).info, 0x8000_0030);
        assert_eq!(Injection::of(Event::Nmi).info, 0x8000_0202);
        let gp = Injection::of(Event::Exception {
            vector: 13,
            error_code: Some(0x18),
        });
        assert_eq!(gp.info, 0x8000_0B0D);
        assert_eq!(gp.error_code, 0x18);
        let ud = Injection::of(Event::Exception {
            vector: 6,
            error_code: None,
        });
        assert_eq!(ud.info, 0x8000_0306);
        assert_eq!(gp.for_mode(false).info, 0x8000_030D);
        assert_eq!(gp.for_mode(true), gp);
    }

    #[test]
    fn an_nmi_enters_without_sti_or_nmi_blocking() {
        let nmi = Injection::of(Event::Nmi).info;
        let all = blocking::STI | blocking::MOV_SS | blocking::NMI;
        assert_eq!(entry_interruptibility(nmi, all), blocking::MOV_SS);
        let requeued = Injection::requeue(0x8000_0202, 0, 0).unwrap().info;
        assert_eq!(entry_interruptibility(requeued, blocking::NMI), 0);
        let ext = Injection::of(Event::Interrupt(0x30)).info;
        assert_eq!(entry_interruptibility(ext, all), all, "not an NMI");
        assert_eq!(entry_interruptibility(nmi & !VALID, all), all, "not valid");
    }

    #[test]
    fn interrupted_events_are_requeued_with_their_length_when_software() {
        assert_eq!(Injection::requeue(0x0000_0041, 0, 2), None);
        // An external interrupt cut short by an EPT violation, bit 12 set by the CPU.
        let ext = Injection::requeue(0x8000_1041, 0, 3).unwrap();
        assert_eq!(ext.info, 0x8000_0041);
        assert_eq!(ext.instruction_len, 0);
        // INT 0x80 (software interrupt) keeps the instruction length.
        let int = Injection::requeue(0x8000_0480, 0, 2).unwrap();
        assert_eq!(int.instruction_len, 2);
        // #PF with its error code.
        let pf = Injection::requeue(0x8000_0B0E, 6, 0).unwrap();
        assert_eq!((pf.info, pf.error_code), (0x8000_0B0E, 6));
    }
}
