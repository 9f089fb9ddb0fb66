//! The guest's NMI blocking, which SVM without vNMI leaves to the monitor (AMD APM Vol. 2
//! §15.20, §15.21.4): from the delivery of an injected NMI until its handler's IRET completes,
//! no other NMI may be injected. The monitor intercepts IRET while the handler runs; the
//! intercept fires before the IRET executes, so the guest runs it after that exit, and the
//! first exit at another RIP shows it completed (KVM's method: no single-stepping, the window
//! opens at the next exit of any kind).
//!
//! Pure state: the vCPU sets the IRET intercept from `intercept_iret` and feeds exits in.

/// Where the guest is with the last NMI injected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NmiBlocking {
    /// NMIs may be injected.
    #[default]
    Open,
    /// An NMI was injected; its handler has not reached IRET.
    Handler,
    /// The handler's IRET at this RIP was intercepted and runs at the next entry.
    Iret(u64),
}

impl NmiBlocking {
    /// An NMI was queued for the next entry.
    pub fn injected(&mut self) {
        *self = Self::Handler;
    }

    /// The IRET intercept fired at `rip`.
    pub fn iret_intercepted(&mut self, rip: u64) {
        if *self == Self::Handler {
            *self = Self::Iret(rip);
        }
    }

    /// The guest exited at `rip` for another reason: past the intercepted IRET, it completed.
    /// (An exit on the IRET itself, before it ran, keeps the NMI blocked.)
    pub fn exited_at(&mut self, rip: u64) {
        if matches!(*self, Self::Iret(at) if at != rip) {
            *self = Self::Open;
        }
    }

    pub fn blocked(&self) -> bool {
        *self != Self::Open
    }

    /// IRET is intercepted only while the handler runs.
    pub fn intercept_iret(&self) -> bool {
        *self == Self::Handler
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_nmi_blocks_until_the_exit_after_its_iret() {
        let mut n = NmiBlocking::default();
        assert!(!n.blocked() && !n.intercept_iret());
        n.injected();
        assert!(n.blocked() && n.intercept_iret());
        n.exited_at(0x1000);
        assert!(n.blocked(), "exits inside the handler change nothing");
        n.iret_intercepted(0x2000);
        assert!(n.blocked());
        assert!(!n.intercept_iret(), "the IRET must run");
        n.exited_at(0x2000);
        assert!(n.blocked(), "an exit before the IRET ran");
        n.exited_at(0x3000);
        assert!(!n.blocked() && !n.intercept_iret());
    }

    #[test]
    fn an_iret_outside_a_handler_changes_nothing() {
        let mut n = NmiBlocking::default();
        n.iret_intercepted(0x2000);
        assert_eq!(n, NmiBlocking::Open);
        n.injected();
        n.iret_intercepted(0x2000);
        n.injected();
        assert_eq!(n, NmiBlocking::Handler, "a new NMI restarts the handler");
    }
}
