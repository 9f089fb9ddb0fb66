//! virtio-console (virtio 1.2, 5.3) with one port and no features: what the guest writes on its
//! transmit queue (`hvc0`) goes to the same console stream as the UART. The receive queue is
//! left alone, so console input stays on the UART.
//!
//! It is not the transport and not a multiport console.

use super::queue::{Queue, QueueError};
use crate::mem::GuestMemory;

pub const DEVICE_ID: u16 = 3;
/// Port 0's queues (5.3.2).
pub const RECEIVE_QUEUE: usize = 0;
pub const TRANSMIT_QUEUE: usize = 1;
pub const QUEUES: usize = 2;
/// Bytes copied out per step.
const CHUNK: usize = 256;

#[derive(Default)]
pub struct Console;

impl Console {
    /// Device configuration: cols, rows, max_nr_ports and emerg_wr are only valid with features
    /// not offered; they read as zero.
    pub fn read_config(&self, data: &mut [u8]) {
        data.fill(0);
    }

    /// Hands the bytes of every transmitted buffer to `emit`; tells whether an interrupt is due.
    pub fn service(
        &mut self,
        tx: &mut Queue,
        mem: &mut dyn GuestMemory,
        emit: &mut dyn FnMut(&[u8]),
    ) -> Result<bool, QueueError> {
        let mut interrupt = false;
        loop {
            let head = {
                let Some(chain) = tx.pop(mem)? else {
                    return Ok(interrupt);
                };
                let mut buf = [0u8; CHUNK];
                let mut at = 0;
                loop {
                    let n = chain.read(mem, at, &mut buf)?;
                    emit(&buf[..n]);
                    at += n as u64;
                    if n < CHUNK {
                        break;
                    }
                }
                chain.head
            };
            interrupt |= tx.push_used(mem, head, 0)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::queue::tests::Driver;

    #[test]
    fn transmitted_bytes_reach_the_console() {
        let mut d = Driver::new();
        let mut q = d.queue();
        d.mem.write(0x8000, b"hello ").unwrap();
        d.mem.write(0x9000, &[b'x'; 300]).unwrap();
        d.offer(0, &[(0x8000, 6, false), (0x9000, 300, false)]);
        let mut out = std::vec::Vec::new();
        let mut console = Console;
        let r = console.service(&mut q, &mut d.mem, &mut |b| out.extend_from_slice(b));
        assert_eq!(r, Ok(true));
        assert_eq!(out.len(), 306);
        assert_eq!(&out[..7], b"hello x");
        assert_eq!(d.used(0), (0, 0));
    }
}
