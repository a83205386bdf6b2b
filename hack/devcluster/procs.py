"""Child processes of the control plane: start with a log file, wait, stop; free ports."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_PR_SET_PDEATHSIG = 1


class StartupError(RuntimeError):
    """A component did not come up; the message names it and where its log is."""


def free_ports(count: int) -> list[int]:
    """Distinct TCP ports on 127.0.0.1 that nothing listens on now.

    All sockets stay bound until every port is chosen, so no port is handed out twice. The
    kernel hands out ephemeral ports in sequence, so another process is very unlikely to take
    one in the second before the component binds it.
    """
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind(("127.0.0.1", 0))
            ports.append(int(s.getsockname()[1]))
        return ports


def _die_with_parent() -> None:
    # Under pytest the components must not outlive the test run, even when pytest is killed.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class Process:
    """One running component, known by pid so that another process (`hack/cluster down`)
    can stop it too."""

    name: str
    pid: int
    log: Path
    executable: str

    @classmethod
    def start(
        cls,
        name: str,
        argv: Sequence[str],
        log: Path,
        *,
        detach: bool,
        env: Mapping[str, str] | None = None,
    ) -> Process:
        """Start argv with stdout and stderr in log.

        detach: the process outlives this one (the shell's `hack/cluster up`); otherwise it is
        killed when this process dies. env: variables set on top of this process's.
        """
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            out.write(f"# {' '.join(argv)}\n".encode())
            out.flush()
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=None if env is None else {**os.environ, **env},
                start_new_session=True,  # a Ctrl-C in the terminal goes to us, not to them
                preexec_fn=None if detach else _die_with_parent,  # noqa: PLW1509
            )
        _CHILDREN[popen.pid] = popen
        return cls(name=name, pid=popen.pid, log=log, executable=argv[0])

    def alive(self) -> bool:
        child = _CHILDREN.get(self.pid)
        if child is not None:
            return child.poll() is None
        # Not our child (`hack/cluster down` in a later shell): trust the pid only while it
        # still runs our executable, so that a recycled pid is never signalled.
        try:
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes()
        except OSError:
            return False
        return cmdline.split(b"\0", 1)[0] == self.executable.encode() and not _is_zombie(self.pid)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after timeout seconds."""
        if not self.alive():
            self._reap()
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            while self.alive():
                time.sleep(0.05)
        self._reap()

    def _reap(self) -> None:
        child = _CHILDREN.pop(self.pid, None)
        if child is not None:
            child.wait()

    def tail(self, lines: int = 40) -> str:
        return tail(self.log, lines)


# The Popen objects of the children this process started, so that they are reaped.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # The state is the field after the parenthesised command name, which may hold spaces.
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:])


def wait_until(
    what: str,
    ready: Callable[[], bool],
    timeout: float,
    *,
    process: Process | None = None,
    interval: float = 0.2,
) -> None:
    """Poll ready() until it is true; fail early when process has exited.

    ready() may raise: an exception counts as not ready yet (a refused connection, say).
    """
    deadline = time.monotonic() + timeout
    last_error = ""
    while True:
        try:
            if ready():
                return
        except Exception as exc:
            last_error = f"{type(exc).__name__}: {exc}"
        if process is not None and not process.alive():
            raise StartupError(
                f"{process.name} exited while waiting for {what}; log {process.log}:\n"
                f"{process.tail()}"
            )
        if time.monotonic() > deadline:
            where = f"; log {process.log}:\n{process.tail()}" if process else ""
            raise StartupError(
                f"timed out after {timeout:.0f}s waiting for {what} "
                f"(last error: {last_error or 'none'}){where}"
            )
        time.sleep(interval)
