#!/usr/bin/env python3
"""Test helper: run a command under a seccomp allow-list, as systemd's SystemCallFilter= does.

Usage: seccomp_exec.py ALLOWED_FILE -- COMMAND [ARG...]

ALLOWED_FILE holds one system call name per line (groups already expanded). Every other
system call fails with EPERM (the unit's SystemCallErrorNumber=EPERM). The filter is built
with libseccomp, the library systemd itself uses for SystemCallFilter=, through ctypes, so
no development package is needed. Names unknown on this architecture are skipped, as systemd
skips them. Exits 77 if libseccomp cannot be loaded (the caller reports a skip).
"""

import ctypes
import errno
import os
import sys

SCMP_ACT_ALLOW = 0x7FFF0000


def scmp_act_errno(e):
    return 0x00050000 | (e & 0x0000FFFF)


def main():
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.stderr.write(__doc__)
        return 2
    try:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError as e:
        sys.stderr.write(f"seccomp_exec: cannot load libseccomp.so.2: {e}\n")
        return 77
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add.restype = ctypes.c_int
    lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    lib.seccomp_load.restype = ctypes.c_int
    lib.seccomp_load.argtypes = [ctypes.c_void_p]

    with open(sys.argv[1]) as f:
        names = [line.strip() for line in f if line.strip()]
    ctx = lib.seccomp_init(scmp_act_errno(errno.EPERM))
    if not ctx:
        sys.stderr.write("seccomp_exec: seccomp_init failed\n")
        return 1
    allowed = 0
    for name in names:
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr < 0:
            continue  # not a system call of this architecture
        rc = lib.seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0)
        if rc != 0:
            sys.stderr.write(f"seccomp_exec: cannot allow {name}: {os.strerror(-rc)}\n")
            return 1
        allowed += 1
    if allowed == 0:
        sys.stderr.write("seccomp_exec: no system call allowed\n")
        return 1
    rc = lib.seccomp_load(ctx)
    if rc != 0:
        sys.stderr.write(f"seccomp_exec: seccomp_load failed: {os.strerror(-rc)}\n")
        return 1
    os.execv(sys.argv[3], sys.argv[3:])


if __name__ == "__main__":
    sys.exit(main())
