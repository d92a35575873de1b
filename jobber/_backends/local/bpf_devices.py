"""cgroup v2's device controller: a BPF_PROG_TYPE_CGROUP_DEVICE program, by bpf(2) and ctypes.

cgroup v2 has no ``devices.deny`` file: a device program attached to the cgroup decides
every open and mknod of a device node by a process in it (return 0: EPERM; 1: allowed).
Ours denies a short list of character devices (the GPUs a job was not given) and allows
everything else, so whatever an ancestor's program (systemd's, a container runtime's)
denies stays denied: with BPF_F_ALLOW_MULTI every program from the cgroup up to the root
runs, and all must allow.

The program is built as systemd (``src/core/bpf-devices.c``) and crun
(``src/libcrun/ebpf.c``, ``bpf_program_init_dev``/``bpf_program_append_dev``) build theirs,
and runc's ``libcontainer/cgroups/devices/devicefilter.go`` in Go: load the type, major and
minor from ``struct bpf_cgroup_dev_ctx`` into registers, then one compare-and-jump block
per rule. crun also shows the load and the attach (BPF_PROG_LOAD, then BPF_PROG_ATTACH
with BPF_CGROUP_DEVICE and BPF_F_ALLOW_MULTI). Kernel side: ``include/uapi/linux/bpf.h``
and https://docs.kernel.org/admin-guide/cgroup-v2.html#device-controller

Once attached, the program lives as long as the cgroup does: the descriptors are closed
here, and the job's ``rmdir`` frees it. Loading and attaching need privilege (CAP_SYS_ADMIN,
or CAP_BPF from Linux 5.8): an ordinary user in a delegated cgroup gets EPERM, which
:func:`deny_char_devices` raises for the caller to note.

Standard library only: the supervisor island imports this module (lazily, for GPU jobs).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
import sys

__all__ = ["deny_char_devices", "program", "BpfUnavailable"]

# include/uapi/linux/bpf.h
_BPF_PROG_LOAD = 5
_BPF_PROG_ATTACH = 8
_BPF_PROG_TYPE_CGROUP_DEVICE = 15
_BPF_CGROUP_DEVICE = 6
_BPF_F_ALLOW_MULTI = 1 << 1
_BPF_DEVCG_DEV_CHAR = 1 << 1
# Opcodes (include/uapi/linux/bpf_common.h, bpf.h): class | size/op | source.
_LDX_MEM_W = 0x61  # BPF_LDX | BPF_MEM | BPF_W: dst = *(u32 *)(src + off)
_ALU32_AND_K = 0x54  # BPF_ALU | BPF_AND | BPF_K: dst = (u32)dst & imm
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K: if dst == imm goto pc + off
_JNE_K = 0x55  # BPF_JMP | BPF_JNE | BPF_K: if dst != imm goto pc + off
_MOV64_K = 0xB7  # BPF_ALU64 | BPF_MOV | BPF_K: dst = imm
_EXIT = 0x95  # BPF_JMP | BPF_EXIT: return r0
# __NR_bpf per architecture (arch/*/include/uapi/asm/unistd*.h; the generic table for arm64 and riscv).
_SYS_BPF = {"x86_64": 321, "aarch64": 280, "arm64": 280, "riscv64": 280, "ppc64le": 361, "ppc64": 361,
            "s390x": 351, "i686": 357, "i386": 357, "armv7l": 386}
_ATTR_SIZE = 128  # bigger than every field we set; the kernel wants the tail zero, and it is


class BpfUnavailable(OSError):
    """The kernel refused to load or attach the program (``errno`` says why)."""


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    """One ``struct bpf_insn``: u8 code, u4 dst_reg/u4 src_reg (bitfields), s16 off, s32 imm."""
    regs = (src << 4) | dst if sys.byteorder == "little" else (dst << 4) | src
    return struct.pack("=BBhi", code, regs, off, imm)


def program(denied: list[tuple[int, int]]) -> bytes:
    """The instructions: deny these (major, minor) character devices, allow everything else.

    r1 is the context, ``struct bpf_cgroup_dev_ctx {u32 access_type; u32 major; u32 minor;}``;
    the low 16 bits of ``access_type`` are the device type (BPF_DEVCG_DEV_CHAR = 2), the high
    ones the access (mknod, read, write: all three are denied alike).
    """
    body = [
        _insn(_LDX_MEM_W, dst=2, src=1, off=0),  # r2 = ctx->access_type
        _insn(_ALU32_AND_K, dst=2, imm=0xFFFF),  # r2 = the device type
        _insn(_LDX_MEM_W, dst=3, src=1, off=4),  # r3 = ctx->major
        _insn(_LDX_MEM_W, dst=4, src=1, off=8),  # r4 = ctx->minor
    ]
    rules = []
    for major, minor in denied:
        rules.append(("major", major))
        rules.append(("minor", minor))
    # Each rule is two jumps; ``deny`` follows the rules and the allow block, so from the jump
    # at position p the deny block is (len(jumps) - p - 1) + 2 instructions ahead.
    jumps = [_insn(_JNE_K, dst=2, imm=_BPF_DEVCG_DEV_CHAR, off=2 * len(denied))]  # not a char device: allow
    for position, (major, minor) in enumerate(denied):
        after = 2 * (len(denied) - position - 1)  # rule jumps left after this rule's two
        jumps.append(_insn(_JNE_K, dst=3, imm=major, off=1))  # other major: next rule
        jumps.append(_insn(_JEQ_K, dst=4, imm=minor, off=after + 2))  # this device: deny
    allow = [_insn(_MOV64_K, dst=0, imm=1), _insn(_EXIT)]
    deny = [_insn(_MOV64_K, dst=0, imm=0), _insn(_EXIT)]
    return b"".join(body + jumps + allow + deny)


def _syscall_number() -> int:
    machine = platform.machine()
    if machine not in _SYS_BPF:
        raise BpfUnavailable(errno.ENOSYS, f"bpf(2) has no known syscall number on {machine}")
    return _SYS_BPF[machine]


def _bpf(command: int, attr: ctypes.Array) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    result = libc.syscall(ctypes.c_long(_syscall_number()), ctypes.c_int(command), attr, ctypes.c_uint(_ATTR_SIZE))
    if result < 0:
        code = ctypes.get_errno()
        raise BpfUnavailable(code, os.strerror(code))
    return result


def _load(insns: bytes) -> int:
    """BPF_PROG_LOAD; a refusal by the verifier carries its log."""
    code = ctypes.create_string_buffer(insns, len(insns))
    license_ = ctypes.create_string_buffer(b"Apache-2.0")  # only GPL-only helpers care, and none is used

    def attr(log: ctypes.Array | None) -> ctypes.Array:
        buf = ctypes.create_string_buffer(_ATTR_SIZE)
        # prog_type, insn_cnt, insns, license, log_level, log_size, log_buf, kern_version,
        # prog_flags, prog_name[16] (what bpftool shows); a device program needs no
        # expected_attach_type (the kernel checks it for socket and sysctl programs only).
        struct.pack_into("=IIQQIIQII16s", buf, 0, _BPF_PROG_TYPE_CGROUP_DEVICE, len(insns) // 8,
                         ctypes.addressof(code), ctypes.addressof(license_), 1 if log is not None else 0,
                         len(log) if log is not None else 0, ctypes.addressof(log) if log is not None else 0,
                         0, 0, b"jobber_gpus")
        return buf

    try:
        return _bpf(_BPF_PROG_LOAD, attr(None))
    except BpfUnavailable as err:
        if err.errno != errno.EINVAL and err.errno != errno.EACCES:
            raise
    log = ctypes.create_string_buffer(65536)
    try:
        return _bpf(_BPF_PROG_LOAD, attr(log))
    except BpfUnavailable as err:
        raise BpfUnavailable(err.errno, f"{err.strerror}: the verifier said {log.value.decode(errors='replace')!r}") \
            from None


def deny_char_devices(cgroup: str, denied: list[tuple[int, int]]) -> None:
    """Attach a device program to ``cgroup`` that denies these (major, minor) char devices.

    Args:
        cgroup: the cgroup's directory (cgroup v2), before any process joins it.
        denied: the devices no process of the cgroup may open or mknod.

    Raises:
        BpfUnavailable: the kernel refused (EPERM without CAP_SYS_ADMIN, ENOSYS/EINVAL
            on a kernel without CONFIG_CGROUP_BPF, ...).
        OSError: the cgroup directory cannot be opened.
    """
    if not denied:
        return  # nothing to fence (and a program whose deny block is unreachable fails the verifier)
    prog = _load(program(denied))
    try:
        target = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            buf = ctypes.create_string_buffer(_ATTR_SIZE)
            # target_fd, attach_bpf_fd, attach_type, attach_flags, replace_bpf_fd
            struct.pack_into("=IIIII", buf, 0, target, prog, _BPF_CGROUP_DEVICE, _BPF_F_ALLOW_MULTI, 0)
            _bpf(_BPF_PROG_ATTACH, buf)
        finally:
            os.close(target)
    finally:
        os.close(prog)  # the attachment holds its own reference
