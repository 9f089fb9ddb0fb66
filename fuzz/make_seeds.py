#!/usr/bin/env python3
"""Writes the seed corpus, a few small inputs per fuzz target, into fuzz/corpus/<target>/.

Each seed follows the input layout its target documents; the fuzzer finds the rest. Run it
again after changing a target's input layout: `python3 fuzz/make_seeds.py`.
"""
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def u8(v): return struct.pack("<B", v & 0xFF)
def u16(v): return struct.pack("<H", v & 0xFFFF)
def u32(v): return struct.pack("<I", v & 0xFFFFFFFF)
def u64(v): return struct.pack("<Q", v & 0xFFFFFFFFFFFFFFFF)


def bzimage(payload_len=0x200, pref=0x20_0000, init_size=0x10_0000, setup_sects=1):
    """A protocol 2.15 bzImage with a 64-bit entry, as boot.rst lays out the header."""
    img = bytearray((setup_sects + 1) * 512 + payload_len)
    def put(at, b): img[at:at + len(b)] = b
    img[0x1F1] = setup_sects
    put(0x1F4, u32(payload_len // 16))
    put(0x1FE, u16(0xAA55))
    put(0x200, bytes([0xEB, 0x6A]))
    put(0x202, b"HdrS")
    put(0x206, u16(0x020F))
    img[0x211] = 1  # LOADED_HIGH
    put(0x214, u32(0x10_0000))
    put(0x22C, u32(0x7FFF_FFFF))
    put(0x230, u32(0x20_0000))
    img[0x234] = 1
    put(0x236, u16(3))  # XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G
    put(0x238, u32(2048))
    put(0x258, u64(pref))
    put(0x260, u32(init_size))
    for i in range((setup_sects + 1) * 512, len(img)):
        img[i] = i % 251
    return bytes(img)


def config():
    write("config", "vm.cfg", 'name = "guest"\nkernel = "bzImage"\nramdisk = "initrd"\n'
          'memory = 512\nvcpus = 2\nroot = "/dev/ram0"\nextra = "console=ttyS0"\n')
    write("config", "lists.cfg", "# xl style\nname='a'; kernel=\"k\\x41\\101\"\n"
          "vif = [ 'mac=00:16:3e:00:00:01,bridge=br0', ]\ndisk = [[\"a\", 0x10], [],]\n"
          "extra = \"a\"\nextra += \"b\"\nmemory = \"0x200\"\n")
    write("config", "error.cfg", "name = \"x\"\nmemory = 512 + 1\n")


def linux_load():
    for name, flags, ram_units, cmd, rd in [("plain", 0, 4095, b"console=ttyS0", 0),
                                            ("initrd", 1, 4095, b"root=/dev/ram0", 0x3000),
                                            ("short", 3, 1024, b"", 0x1000)]:
        hdr = u16(ram_units) + u8(flags) + u16(2) + u16(len(cmd)) + u32(rd)
        write("linux_load", name, hdr + cmd + bzimage())


def emulate():
    # mode, flags, aim, reserved, rip, rflags, 16 GPRs, bus value, raw gpa, 5 segment bases,
    # cr0, cr3, cr4, efer, cs_base, cs_long, cs_db, cpl, 15 code bytes.
    mmio = 0xFEE0_0000
    cases = {
        "mov_store_long": (5, b"\x89\x03"),           # mov [rbx], eax
        "mov_load_disp": (5, b"\x8b\x43\x20"),       # mov eax, [rbx+0x20]
        "mov_imm8": (5, b"\xc6\x03\x05"),            # mov byte [rbx], 5
        "movzx_5level": (6, b"\x0f\xb7\x03"),        # movzx eax, word [rbx]
        "add_pae": (4, b"\x01\x0b"),                 # add [ebx], ecx
        "cmp_pse": (3, b"\x83\x3b\x01"),             # cmp dword [ebx], 1
        "xchg_flat32": (2, b"\x87\x03"),             # xchg [ebx], eax
        "bt_imm": (5, b"\x0f\xba\x23\x03"),          # bt dword [rbx], 3
        "stosd": (5, b"\xab"),
        "movsd_rex": (5, b"\x48\xa5"),               # movsq
        "moffs_real": (0, b"\xa1\x00\x03"),          # mov ax, [0x300]
        "mov_rip_rel": (5, b"\x8b\x05\x00\x10\x00\x00"),
    }
    for name, (mode, code) in cases.items():
        gprs = [0] * 16
        gprs[3] = mmio if mode >= 5 else 0x2000  # rbx
        gprs[6] = 0x3000                          # rsi
        gprs[7] = mmio                            # rdi
        data = u8(mode) + u8(0) + u8(1) + u8(0) + u64(0x10) + u64(2)
        data += b"".join(u64(g) for g in gprs) + u64(0x1234_5678) + u64(mmio)
        data += u64(0) * 5 + u64(0) * 5 + u8(0) + u8(0) + u8(0)
        write("emulate", name, data + code.ljust(15, b"\x90"))


def platform():
    cfg = u32(1_500_000_000) + u32(512 << 16) + u32(400_000_000)
    now = u16(100)
    lapic = lambda off, val: u8(3) + u8(1) + u16(off) + u8(2) + u64(val)  # mmio write, 4 bytes
    poll = lambda delta: u8(6) + u8(1) + u16(delta)
    io_w = lambda sel, port_ix, size_ix, val: u8(1) + u8(sel) + u8(port_ix) + u8(size_ix) + u32(val)
    timer = (lapic(0xF0, 0x1FF) + lapic(0x3E0, 0xB) + lapic(0x320, 0x20030) + lapic(0x380, 50)
             + poll(60000) + poll(60000) + u8(8) + u8(4) + lapic(0xB0, 0))
    write("platform", "lapic_timer", cfg + now + timer)
    pit = (io_w(3, 4, 0, 0x34) + io_w(0, 4, 0, 0x10) + io_w(0, 4, 0, 0) + io_w(1, 1, 0, 0xFE)
           + poll(40000) + poll(40000) + u8(8) + u8(2))
    write("platform", "pit_pic", cfg + now + pit)
    uart = io_w(1, 0, 0, 1) + io_w(0, 0, 0, ord("h")) + u8(10) + u8(9) + u8(ord("k")) + u8(0) + u8(0) + u8(0) + u8(0)
    write("platform", "uart", cfg + now + uart)


def ept():
    # format, max page size, host bits, budget, then ops: op, gpa, len, [hpa, perms, type], probe.
    gib_map = u8(0) + u8(0x12) + u8(0) + u8(0) + u8(0x10) + u8(0) + u8(0) + u8(0x12) + u8(0) + u8(0) + u8(7) + u8(4)
    split = u8(3) + u8(0x12) + u8(1) + u8(3) + u8(0x02) + u8(1) + u8(0) + u8(1)
    unmap = u8(2) + u8(0x12) + u8(2) + u8(0) + u8(0x02) + u8(0) + u8(5)
    probe = u8(2) + u8(0) + u8(0) + u16(0x10)
    write("ept", "ept_split", u8(1) + u8(2) + u8(0) + u8(200) + gib_map + probe + split + probe + unmap + probe)
    write("ept", "npt_split", u8(0) + u8(2) + u8(0) + u8(200) + gib_map + probe + split + probe + unmap + probe)


def bzimage_seeds():
    write("bzimage", "protocol_2_15", bzimage())
    legacy = bytearray(bzimage(payload_len=0x40, setup_sects=4))
    legacy[0x1F1] = 0  # reads as 4 setup sectors
    write("bzimage", "setup_sects_0", bytes(legacy))


def elf64(entry, paddr, body, note=None):
    """A minimal ELF64 x86-64 executable: one PT_LOAD of `body` at `paddr`, optionally a PT_NOTE."""
    phnum = 2 if note else 1
    phoff, hdr_len = 64, 64 + 56 * phnum
    note_off = hdr_len
    body_off = (note_off + (len(note) if note else 0) + 15) & ~15
    ehdr = (b"\x7fELF" + bytes([2, 1, 1]) + bytes(9) + u16(2) + u16(62) + u32(1) + u64(entry)
            + u64(phoff) + u64(0) + u32(0) + u16(64) + u16(56) + u16(phnum) + u16(64) + u16(0) + u16(0))
    load = u32(1) + u32(5) + u64(body_off) + u64(paddr) + u64(paddr) + u64(len(body)) + u64(len(body) + 0x100) + u64(0x1000)
    ph = load
    if note:
        ph += u32(4) + u32(4) + u64(note_off) + u64(0) + u64(0) + u64(len(note)) + u64(len(note)) + u64(4)
    out = bytearray(ehdr + ph + (note or b""))
    out += bytes(body_off - len(out)) + body
    return bytes(out)


def boot32():
    xen_note = u32(4) + u32(4) + u32(18) + b"Xen\0" + u32(0x100000)
    hdr = u8(0x80) + u16(4095) + u8(1) + u16(16) + bytes(range(16))
    write("boot32", "pvh_elf", hdr + elf64(0x100000, 0x100000, b"\xf4" * 64, xen_note))
    mb = u32(0x1BADB002) + u32(0x00010000) + u32((-(0x1BADB002 + 0x00010000)) & 0xFFFFFFFF)
    mb += u32(0x100000) + u32(0x100000) + u32(0) + u32(0x101000) + u32(0x100020)
    write("boot32", "multiboot_aout", u8(1) + u16(4095) + u8(1) + u16(0) + mb + b"\xf4" * 64)
    mb_elf = bytearray(elf64(0x100000, 0x100000, b"\xf4" * 64))
    mb_elf[120:132] = u32(0x1BADB002) + u32(0) + u32((-0x1BADB002) & 0xFFFFFFFF)
    write("boot32", "multiboot_elf", u8(1) + u16(4095) + u8(1) + u16(0) + bytes(mb_elf))


def virtio():
    # A console: transmit queue 1 with descriptors at 0x100, avail ring 0x200, used ring 0x300,
    # one 5-byte buffer at 0x400; then a block device whose only descriptor chains to itself.
    ram = bytearray(0x410)
    ram[0x100:0x110] = u64(0x400) + u32(5) + u16(0) + u16(0)
    ram[0x200:0x206] = u16(0) + u16(1) + u16(0)
    ram[0x400:0x405] = b"hello"
    queue = u16(8) + u16(0x100) + u16(0x200) + u16(0x300)
    ops = u8(2) + u16(len(ram)) + bytes(ram) + u8(3)
    ops += u8(4) + u8(1) + queue + u8(1) + u8(0xF5) + u16(0x300) + u8(1) + u64(1) + u8(6)
    write("virtio", "console_tx", ops)
    ram[0x100:0x110] = u64(0x400) + u32(5) + u16(1) + u16(0)  # NEXT, to itself
    ops = u8(0) + u8(0) + u16(len(ram)) + bytes(ram) + u8(2) + u8(4) + u8(0) + queue + u8(6)
    write("virtio", "blk_loop", ops)


if __name__ == "__main__":
    boot32()
    virtio()
    config()
    bzimage_seeds()
    linux_load()
    emulate()
    platform()
    ept()
