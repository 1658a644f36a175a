"""Who holds a TCP port, where the OS says: for ``onion serve``'s one-line "port in use".

Linux lists listening sockets in ``/proc/net/tcp`` and ``/proc/net/tcp6`` (the local
address in hex, the state ``0A`` for LISTEN, and the socket's inode); a process's
``/proc/PID/fd`` links name that inode as ``socket:[INODE]``. A process of another user
is not readable without privileges, and other systems have no ``/proc``: the answer is
then ``None`` and the message says only that the port is taken (psutil would read the
same tables, at the cost of a dependency with compiled parts).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["port_holder"]

_LISTEN = "0A"


def _listening_inodes(port: int, proc: Path) -> set[str]:
    inodes = set()
    for table in ("net/tcp", "net/tcp6"):
        try:
            lines = (proc / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == _LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def _command(pid: str, proc: Path) -> str:
    try:
        argv = (proc / pid / "cmdline").read_bytes().split(b"\0")
        text = " ".join(part.decode(errors="replace") for part in argv if part)
    except OSError:
        text = ""
    if not text:
        try:
            text = (proc / pid / "comm").read_text().strip()
        except OSError:
            return "?"
    return text if len(text) <= 80 else text[:77] + "..."


def port_holder(port: int, proc: str = "/proc") -> tuple[int, str] | None:
    """``(pid, command line)`` of a process listening on TCP ``port``, or ``None`` when the
    OS does not say (no ``/proc``, or the holder belongs to another user)."""
    root = Path(proc)
    wanted = {f"socket:[{inode}]" for inode in _listening_inodes(port, root)}
    if not wanted:
        return None
    try:
        pids = [entry for entry in os.listdir(root) if entry.isdigit()]
    except OSError:
        return None
    for pid in pids:
        try:
            fds = os.listdir(root / pid / "fd")
        except OSError:
            continue  # another user's process, or gone
        for fd in fds:
            try:
                if os.readlink(root / pid / "fd" / fd) in wanted:
                    return int(pid), _command(pid, root)
            except OSError:
                continue
    return None
