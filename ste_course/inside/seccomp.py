"""The notebook's system-call filter: channels closed in the kernel, before any student code.

Installed by the notebook's process (PID 1 of its namespace) as the last step of its seal
(:func:`ste_course.inside.server._enter`), after no-new-privs; it holds for every process and
thread the notebook starts and cannot be removed. A classic BPF program, built here by hand
(no libseccomp), refuses with ``EPERM``:

* ``rt_sigqueueinfo``, ``rt_tgsigqueueinfo`` and ``pidfd_send_signal`` with a ``siginfo``: no
  signal with a forged sender (attack: a SIGINT that claims to come from outside the notebook);
* ``setrlimit``, and ``prlimit64`` when it sets a limit (reading one still works): the limits the
  keeper set stay as set (attack: ``RLIMIT_CPU`` of one second, so the kernel's own SIGKILL ends
  PID 1 and the row reads "killed from outside");
* ``prctl(PR_SET_PDEATHSIG)``: the notebook dies with its keeper, whatever it does;
* ``add_key``, ``request_key``, ``keyctl``: no kernel keyring (keys left by one notebook for a
  later one, or the grader's own session keyring);
* ``memfd_create``, and SysV ``shmget``, ``msgget``, ``semget``: memory outside the address
  space and outside the size-bounded tmpfs (``/tmp``, ``/dev/shm``), which no limit counts;
* ``unshare`` and ``clone`` with any ``CLONE_NEW*`` flag: no namespace of its own inside the
  notebook's (a new IPC namespace has the kernel's default SysV limits, a new user namespace
  gives back capabilities in it); ``clone3`` fails with ``ENOSYS`` (its flags are behind a
  pointer the filter cannot read), and the C library falls back to ``clone``;
* ``io_uring_setup``: its operations run without passing through this filter;
* ``sync`` and ``syncfs``: their work and locks in the kernel are shared by every process of the
  machine, beyond any cgroup's CPU share (40 processes calling ``sync()`` made the notebook on
  the other worker up to 10 times slower); a notebook writes only to its tmpfs, which needs no
  sync (``os.sync()`` returns as before: ``sync(2)`` reports nothing);
* ``io_setup``: Linux AIO contexts count against a machine-wide limit (``fs.aio-max-nr``), which
  one notebook could take whole, failing every other user of it on the machine;
* ``ptrace``, ``process_vm_readv``, ``process_vm_writev`` and ``pidfd_getfd``: no reading or
  writing another process's memory or descriptors, a second wall behind the namespaces and the
  processes' being not dumpable (the notebook's own children included: nothing to debug there).

``fsync`` and ``fdatasync`` succeed without running (they return 0): on the machine's disk each
asks the device to flush its cache, even for a file opened read-only, about 24,000 flushes a
second from 40 processes, which made the other worker's notebook up to 7 times slower; what a
notebook can write is on its tmpfs, where they do nothing anyway. So does ``fadvise64`` with
``POSIX_FADV_DONTNEED``: it drops the machine's cached pages of a shared file (the libraries
everyone imports: a cold ``import tensorflow`` then took 20 % longer).

System calls of another ABI (32-bit ``int 0x80`` on x86-64, x32) fail with ``ENOSYS``. On a
machine that is neither x86-64 nor AArch64 :func:`install` raises: the seal fails closed.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
X32_SYSCALL_BIT = 0x40000000
CLONE_NEW_ANY = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000 | 0x80
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 1, 38, 22, 2
RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000
NUMBERS = {  # from the kernel's syscall tables (x86-64: arch/x86/entry/syscalls; AArch64: the generic table)
    "x86_64": {"rt_sigqueueinfo": 129, "rt_tgsigqueueinfo": 297, "pidfd_send_signal": 424, "setrlimit": 160,
               "prlimit64": 302, "prctl": 157, "add_key": 248, "request_key": 249, "keyctl": 250,
               "memfd_create": 319, "shmget": 29, "msgget": 68, "semget": 64, "unshare": 272, "clone": 56,
               "clone3": 435, "io_uring_setup": 425, "ptrace": 101, "process_vm_readv": 310,
               "process_vm_writev": 311, "pidfd_getfd": 438, "sync": 162, "syncfs": 306,
               "io_setup": 206, "fsync": 74, "fdatasync": 75, "fadvise64": 221},
    "aarch64": {"rt_sigqueueinfo": 138, "rt_tgsigqueueinfo": 240, "pidfd_send_signal": 424, "setrlimit": 164,
                "prlimit64": 261, "prctl": 167, "add_key": 217, "request_key": 218, "keyctl": 219,
                "memfd_create": 279, "shmget": 194, "msgget": 186, "semget": 190, "unshare": 97, "clone": 220,
                "clone3": 435, "io_uring_setup": 425, "ptrace": 117, "process_vm_readv": 270,
                "process_vm_writev": 271, "pidfd_getfd": 438, "sync": 81, "syncfs": 267,
                "io_setup": 0, "fsync": 82, "fdatasync": 83, "fadvise64": 223},
}
ALWAYS = ("rt_sigqueueinfo", "rt_tgsigqueueinfo", "setrlimit", "add_key", "request_key", "keyctl",
          "memfd_create", "shmget", "msgget", "semget", "io_uring_setup", "ptrace", "process_vm_readv",
          "process_vm_writev", "pidfd_getfd", "sync", "syncfs", "io_setup")
NOOP = ("fsync", "fdatasync")  # return 0 without running
NOOP_WHEN = (("fadvise64", 3, 4),)  # (system call, argument, value): 0 without running; POSIX_FADV_DONTNEED
# (system call, argument, mask or value, how): refused when the argument's low 32 bits match
WHEN = (("prlimit64", 2, None, "nonzero"), ("pidfd_send_signal", 2, None, "nonzero"),
        ("prctl", 0, PR_SET_PDEATHSIG, "equals"), ("unshare", 0, CLONE_NEW_ANY, "any bit"),
        ("clone", 0, CLONE_NEW_ANY, "any bit"))

# classic BPF opcodes
LD_ABS, JEQ, JGE, JSET, RET = 0x20, 0x15, 0x35, 0x45, 0x06
NR, ARCH_OFFSET = 0, 4


def _arg(index: int, high: bool = False) -> int:
    """Offset of an argument's low (or high) 32 bits in ``struct seccomp_data`` (little-endian)."""
    return 16 + 8 * index + (4 if high else 0)


def program(machine: str | None = None) -> list:
    """The filter as ``(code, jt, jf, k)`` instructions for ``machine`` (``os.uname().machine``);
    ``ValueError`` for an architecture it does not know."""
    machine = machine or os.uname().machine
    if machine not in AUDIT_ARCH:
        raise ValueError(f"no system-call filter for this architecture; received: {machine!r}")
    numbers, deny = NUMBERS[machine], RET_ERRNO | errno.EPERM
    # Labels resolved at the end: ("jump", code, k, true_label, false_label) with None = next.
    code: list = [(LD_ABS, 0, 0, ARCH_OFFSET), ("jump", JEQ, AUDIT_ARCH[machine], None, "other_abi"),
                  (LD_ABS, 0, 0, NR)]
    if machine == "x86_64":
        code.append(("jump", JGE, X32_SYSCALL_BIT, "other_abi", None))
    code.append(("jump", JEQ, numbers["clone3"], "nosys", None))
    for name in ALWAYS:
        code.append(("jump", JEQ, numbers[name], "deny", None))
    for name in NOOP:
        code.append(("jump", JEQ, numbers[name], "noop", None))
    for name, index, value, how in WHEN:
        code.append(("jump", JEQ, numbers[name], f"check_{name}", None))
    for name, index, value in NOOP_WHEN:
        code.append(("jump", JEQ, numbers[name], f"noop_{name}", None))
    code.append((RET, 0, 0, RET_ALLOW))
    for name, index, value in NOOP_WHEN:
        code += [("label", f"noop_{name}"), (LD_ABS, 0, 0, _arg(index)), ("jump", JEQ, value, "noop", "allow")]
    for name, index, value, how in WHEN:
        code.append(("label", f"check_{name}"))
        if how == "nonzero":  # a pointer: either half set
            code += [(LD_ABS, 0, 0, _arg(index)), ("jump", JEQ, 0, None, "deny"),
                     (LD_ABS, 0, 0, _arg(index, high=True)), ("jump", JEQ, 0, "allow", "deny")]
        elif how == "equals":
            code += [(LD_ABS, 0, 0, _arg(index)), ("jump", JEQ, value, "deny", "allow")]
        else:
            code += [(LD_ABS, 0, 0, _arg(index)), ("jump", JSET, value, "deny", "allow")]
    code += [("label", "allow"), (RET, 0, 0, RET_ALLOW), ("label", "deny"), (RET, 0, 0, deny),
             ("label", "noop"), (RET, 0, 0, RET_ERRNO | 0),
             ("label", "nosys"), (RET, 0, 0, RET_ERRNO | errno.ENOSYS),
             ("label", "other_abi"), (RET, 0, 0, RET_ERRNO | errno.ENOSYS)]
    labels, position = {}, 0
    for item in code:
        if item[0] == "label":
            labels[item[1]] = position
        else:
            position += 1
    out = []
    for item in code:
        if item[0] == "label":
            continue
        if item[0] == "jump":
            _, op, k, true, false = item
            here = len(out)
            offsets = [0 if target is None else labels[target] - here - 1 for target in (true, false)]
            if not all(0 <= offset <= 255 for offset in offsets):
                raise ValueError(f"a jump out of range in the filter: {offsets}")
            out.append((op, offsets[0], offsets[1], k))
        else:
            out.append(item)
    return out


class _Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install(machine: str | None = None) -> None:
    """No new privileges, then the filter, for this process and all it starts; ``OSError`` when
    the kernel refuses, ``ValueError`` on an unknown architecture (fail closed)."""
    instructions = program(machine)
    raw = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *ins) for ins in instructions))
    prog = _Program(len(instructions), ctypes.addressof(raw))
    libc = ctypes.CDLL(None, use_errno=True)
    for args in ((PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), (PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0)):
        if libc.prctl(*[ctypes.c_ulong(a) for a in args]) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"prctl{args[:2]} for the system-call filter: {os.strerror(err)}")
