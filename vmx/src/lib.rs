//! The Intel VT-x backend (VMX with EPT): not written yet. The monitor detects VMX-only CPUs and
//! says so at boot; this crate will hold the VMCS, the world switch and exit decoding.
#![no_std]
