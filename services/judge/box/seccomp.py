# ruff: noqa: UP031
# mypy: ignore-errors
# (runs inside the sandbox, first part of the harness script: plain, standard library only)
"""Sandbox side: the seccomp filter every program process runs under.

A classic-BPF filter, built here by hand (no libseccomp in the sandbox), installed with
``PR_SET_NO_NEW_PRIVS`` + ``PR_SET_SECCOMP`` in each forked program process after it has dropped to the
container's uid and before any untrusted code runs. It is inherited by everything the program forks.

What it refuses (``EPERM``), and why:

- namespaces and mounts (``unshare``, ``setns``, ``clone`` with any ``CLONE_NEW*`` flag, ``mount``,
  ``umount2``, ``pivot_root``, ``chroot``, the new mount API): a nested user namespace would let a program
  mount its own tmpfs and hold memory outside its limits (found: 1.5 GB written with ``memory_mb`` 512);
- kernel keyrings (``add_key``, ``request_key``, ``keyctl``): keyrings belong to the host uid, so a key
  survives the container and the judge;
- POSIX message queues (``mq_*``): a queue outlives its creator inside the container's IPC namespace;
- other processes' memory and the kernel's attack surface (``ptrace``, ``process_vm_readv/writev``,
  ``bpf``, ``perf_event_open``, ``userfaultfd``, ``io_uring_*``, ``kcmp``, module and kexec calls);
- ``clone3`` answers ``ENOSYS`` (its flags live in memory a filter cannot read), so glibc falls back to
  ``clone``, whose flags the filter checks;
- a foreign system-call ABI (i386 ``int 0x80`` on x86_64) kills the process, and x32 calls (same
  architecture value, numbers with bit 30 set) are refused: the numbers above would mean other calls
  there.
"""

import struct as _sstruct

_BPF_LD_W_ABS = 0x20
_BPF_JEQ_K = 0x15
_BPF_JGE_K = 0x35
_BPF_JSET_K = 0x45
_BPF_RET_K = 0x06
_RET_ALLOW = 0x7FFF0000
_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000
_EPERM, _ENOSYS = 1, 38
# CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
_CLONE_NEW_MASK = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000

# name: (x86_64, aarch64)
_SYSCALLS = {
    "unshare": (272, 97), "setns": (308, 268), "mount": (165, 40), "umount2": (166, 39),
    "pivot_root": (155, 41), "chroot": (161, 51), "open_tree": (428, 428), "move_mount": (429, 429),
    "fsopen": (430, 430), "fsconfig": (431, 431), "fsmount": (432, 432), "fspick": (433, 433),
    "mount_setattr": (442, 442), "add_key": (248, 217), "request_key": (249, 218), "keyctl": (250, 219),
    "mq_open": (240, 180), "mq_unlink": (241, 181), "mq_timedsend": (242, 182), "mq_timedreceive": (243, 183),
    "mq_notify": (244, 184), "mq_getsetattr": (245, 185), "ptrace": (101, 117),
    "process_vm_readv": (310, 270), "process_vm_writev": (311, 271), "bpf": (321, 280),
    "perf_event_open": (298, 241), "userfaultfd": (323, 282), "io_uring_setup": (425, 425),
    "io_uring_enter": (426, 426), "io_uring_register": (427, 427), "kcmp": (312, 272),
    "init_module": (175, 105), "finit_module": (313, 273), "delete_module": (176, 106),
    "kexec_load": (246, 104), "kexec_file_load": (320, 294), "reboot": (169, 142), "swapon": (167, 224),
    "swapoff": (168, 225), "acct": (163, 89), "quotactl": (179, 60), "pidfd_getfd": (438, 438),
}
_ARCHES = {"x86_64": (0, 0xC000003E, 56, 435), "aarch64": (1, 0xC00000B7, 220, 435)}


def _ins(code, jt, jf, k):
    return _sstruct.pack("=HBBI", code, jt, jf, k & 0xFFFFFFFF)


def seccomp_filter(machine):
    """The BPF program (bytes, instruction count) for this machine, or None where it is not supported."""
    if machine not in _ARCHES:
        return None
    col, audit_arch, clone_nr, clone3_nr = _ARCHES[machine]
    eperm = _RET_ERRNO | _EPERM
    prog = [
        _ins(_BPF_LD_W_ABS, 0, 0, 4),  # seccomp_data.arch
        _ins(_BPF_JEQ_K, 1, 0, audit_arch),
        _ins(_BPF_RET_K, 0, 0, _RET_KILL_PROCESS),
        _ins(_BPF_LD_W_ABS, 0, 0, 0),  # seccomp_data.nr
    ]
    if machine == "x86_64":  # the x32 ABI: same arch value, numbers with bit 30 set
        prog += [_ins(_BPF_JGE_K, 0, 1, 0x40000000), _ins(_BPF_RET_K, 0, 0, eperm)]
    for nrs in _SYSCALLS.values():
        prog += [_ins(_BPF_JEQ_K, 0, 1, nrs[col]), _ins(_BPF_RET_K, 0, 0, eperm)]
    prog += [
        _ins(_BPF_JEQ_K, 0, 1, clone3_nr),
        _ins(_BPF_RET_K, 0, 0, _RET_ERRNO | _ENOSYS),
        _ins(_BPF_JEQ_K, 0, 3, clone_nr),
        _ins(_BPF_LD_W_ABS, 0, 0, 16),  # low half of args[0] (the flags) on little-endian machines
        _ins(_BPF_JSET_K, 0, 1, _CLONE_NEW_MASK),
        _ins(_BPF_RET_K, 0, 0, eperm),
        _ins(_BPF_RET_K, 0, 0, _RET_ALLOW),
    ]
    return b"".join(prog), len(prog)


class SeccompInstaller:
    """Built once in the zygote (before any fork); ``install()`` runs in each program process."""

    def __init__(self):
        import ctypes
        import os as _sos

        self.error = None
        built = seccomp_filter(_sos.uname().machine)
        if built is None:
            self.error = "no seccomp filter for machine %r" % _sos.uname().machine
            return
        code, n = built

        class SockFprog(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

        self._buf = ctypes.create_string_buffer(code, len(code))
        self._prog = SockFprog(n, ctypes.addressof(self._buf))
        self._prctl = ctypes.CDLL(None, use_errno=True).prctl
        self._prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
        self._ref = ctypes.byref(self._prog)
        self._get_errno = ctypes.get_errno

    def install(self):
        """Install the filter in this process (raises OSError when the kernel refuses)."""
        if self.error:
            raise OSError(self.error)
        if self._prctl(38, 1, None, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
            raise OSError(self._get_errno(), "PR_SET_NO_NEW_PRIVS failed")
        if self._prctl(22, 2, self._ref, 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
            raise OSError(self._get_errno(), "PR_SET_SECCOMP failed")
