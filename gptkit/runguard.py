"""What keeps a training run's folder safe while it runs: one run per out_dir, and a clean stop.

- `OutDirLock`: an exclusive `fcntl.flock` on `OUT_DIR/.lock`, held for the run's lifetime.
  The kernel drops it when the process ends in any way (even SIGKILL), so a stale lock file
  never blocks the next run; the file only tells a refused run who holds it.
- `StopSignals`: the first SIGINT (Ctrl-C) or SIGTERM only asks the loop to stop; the loop
  finishes its optimizer step, saves `latest.pt` and raises `Interrupted`. A second signal
  stops at once. Under DDP every rank learns of a stop at the same iteration (`should_stop`).
"""

import fcntl
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import torch
import torch.distributed as dist

from gptkit.errors import GptkitError
from gptkit.files import write_failed

LOCK = ".lock"


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal; the message says what was saved. Exit code 128 + signum."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


class OutDirLock:
    """One live run per out_dir. `acquire()` refuses with a GptkitError naming the holder."""

    def __init__(self, out_dir: str | Path):
        self.path = Path(out_dir) / LOCK
        self.fd: int | None = None

    def acquire(self) -> "OutDirLock":
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise write_failed(self.path, e) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise GptkitError(
                    f"{self.path.parent} is in use by another run ({holder}): wait for it to end or stop it, "
                    "or choose another --out_dir"
                ) from None
            # The holder before us removes the file as it lets go: if we locked a file that is no
            # longer the one at self.path, another run may lock the new one, so try again.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        argv = getattr(sys, "orig_argv", sys.argv)  # python -m gptkit.train ..., as it was typed
        command = " ".join(" ".join([Path(argv[0]).name, *argv[1:]]).split())  # one line, even for python -c
        command = command if len(command) <= 80 else command[:79] + "…"
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": command}
        try:
            os.ftruncate(fd, 0)
            os.write(fd, (json.dumps(holder) + "\n").encode())
        except OSError:
            pass  # only a refused run reads this, to name us: a full disk is reported by the run's own writes
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still locked: see acquire
        finally:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "OutDirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        text = f"pid {info['pid']} on {info['host']}"
        return text + (f": {info['command']}" if info.get("command") else "")
    except (OSError, ValueError, KeyError, TypeError):
        return "its pid is not recorded yet"


# A signal this soon after the first is the same request delivered twice (a terminal's Ctrl-C
# reaches torchrun's workers directly and again through torchrun), not a second Ctrl-C.
SAME_REQUEST_S = 1.0


class StopSignals:
    """While active, SIGINT / SIGTERM ask for a stop instead of raising at once.

    `requested` is the first signal's number (0 if none). Outside the main thread (where Python
    cannot install handlers) it does nothing and Ctrl-C behaves as usual.
    """

    def __init__(self, announce: bool = True):
        self.requested, self.first_at, self.announce = 0, 0.0, announce
        self.previous: dict[int, object] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if not self.requested:
            self.requested, self.first_at = signum, time.monotonic()
            if self.announce:  # os.write: print() is not safe inside a signal handler
                name = signal.Signals(signum).name
                os.write(2, f"\n{name}: finishing this step, then saving (once more to quit at once)\n".encode())
            return
        if time.monotonic() - self.first_at < SAME_REQUEST_S:
            return
        self.__exit__()
        raise Interrupted(signum, "interrupted again: quit at once without saving; earlier checkpoints are intact")

    def should_stop(self, device: torch.device) -> int:
        """The signal that asked for a stop, on any rank (0: go on); a collective under DDP."""
        if not (dist.is_available() and dist.is_initialized()):
            return self.requested
        flag = torch.tensor([self.requested], dtype=torch.int64, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())
