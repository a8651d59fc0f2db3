"""What galaxysr prints: nothing but progress and what a user can act on.

TensorFlow's C++ runtime writes start-up notices straight to the process's standard error
(file descriptor 2) — absl's "All log messages before absl::InitializeLog()", oneDNN and
CPU-instruction notices, "Could not find cuda drivers", a failed ``cuInit`` on machines
without a GPU — before and regardless of Python's logging, and some of them even with
``TF_CPP_MIN_LOG_LEVEL=3``. :func:`quiet_native_output` runs a block with file descriptor 2
passed through a filter that drops exactly those lines and forwards everything else (Python
tracebacks, warnings, progress bars, any other native error) unchanged.

It is on by default in the command line tools and the Python API, and off when the user
asks for the runtime's own output: ``--verbose``, ``GALAXYSR_VERBOSE=1``, or their own
``TF_CPP_MIN_LOG_LEVEL`` setting.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import warnings
from contextlib import contextmanager

__all__ = ["NOISE", "is_noise", "verbose", "quiet_native_output", "quiet", "one_line_warnings", "warn_once",
           "log_to_stdout"]

#: Lines of TensorFlow/absl/oneDNN/CUDA start-up chatter (whole lines, without the newline).
NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|I\d{4} [\d:.]+ +\d+ \S+\] .*"                      # absl INFO lines (time as hh:mm:ss.us or epoch)
    r"|[WE]\d{4} [\d:.]+ +\d+ \S+\] .*(cuda|CUDA|cuInit|oneDNN|TensorRT|TF-TRT|AVX).*"
    r"|To enable the following instructions: .*"
    r"|This TensorFlow binary is optimized to use available CPU instructions.*"
    r"|.*rebuild TensorFlow with the appropriate compiler flags\.?)$")

#: Set by the user (before galaxysr runs) to keep TensorFlow's own output.
_USER_TF_LEVEL = os.environ.get("TF_CPP_MIN_LOG_LEVEL")


def is_noise(line: str) -> bool:
    """Whether ``line`` (without its end of line) is TensorFlow start-up chatter."""
    return bool(NOISE.match(line.rstrip("\r\n")))


def verbose() -> bool:
    """Whether the user asked for the runtime's own output (``GALAXYSR_VERBOSE`` or their
    own ``TF_CPP_MIN_LOG_LEVEL``)."""
    return os.environ.get("GALAXYSR_VERBOSE", "") not in ("", "0") or _USER_TF_LEVEL is not None


def _pump(read_fd: int, write_fd: int) -> None:
    """Copy ``read_fd`` to ``write_fd`` chunk by chunk, dropping noise lines. Partial lines
    (progress bars redrawn with a carriage return) pass at once."""
    with os.fdopen(read_fd, "rb", buffering=0) as source:
        while True:
            chunk = source.read(65536)
            if not chunk:
                return
            pieces = re.split(rb"(?<=\n)", chunk)
            kept = b"".join(p for p in pieces if not (p.endswith(b"\n") and is_noise(p.decode("utf-8", "replace"))))
            if kept:
                os.write(write_fd, kept)


_depth = 0
_lock = threading.Lock()


@contextmanager
def quiet_native_output(force: bool = False):
    """Run the block with native writes to standard error filtered (see module docstring);
    nested uses share one filter. Does nothing when :func:`verbose` (unless ``force``: the
    test suite's start-up), or when standard error has no file descriptor (some notebooks)."""
    global _depth
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None
    if (verbose() and not force) or fd != 2:
        yield
        return
    with _lock:
        _depth += 1
        first = _depth == 1
        if first:
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
            sys.stderr.flush()
            saved = os.dup(2)
            read_fd, write_fd = os.pipe()
            os.dup2(write_fd, 2)
            os.close(write_fd)
            pump = threading.Thread(target=_pump, args=(read_fd, saved), daemon=True, name="galaxysr-stderr")
            pump.start()
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if first:
                sys.stderr.flush()
                os.dup2(saved, 2)  # closes the pipe's last write end: the pump sees its end
                pump.join(timeout=5)
                os.close(saved)


def quiet(function):
    """Decorator: run ``function`` inside :func:`quiet_native_output`."""
    import functools

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with quiet_native_output():
            return function(*args, **kwargs)

    return wrapper


def _one_line(message, category, filename, lineno, file=None, line=None):
    """Warnings as one line naming the problem, without the source line that raised it."""
    stream = file or sys.stderr
    try:
        stream.write(f"galaxysr: warning: {message}\n")
    except (AttributeError, OSError):
        pass


def one_line_warnings() -> None:
    """Show warnings as one ``galaxysr: warning: …`` line each (command line tools)."""
    warnings.showwarning = _one_line


def log_to_stdout() -> None:
    """Show the ``galaxysr`` logger's INFO messages (what was done to the inputs) as
    ``galaxysr: …`` lines on standard output (command line tools)."""
    import logging

    logger = logging.getLogger("galaxysr")
    if not any(getattr(h, "_galaxysr", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("galaxysr: %(message)s"))
        handler._galaxysr = True
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


_said: set = set()


def warn_once(message: str, category=UserWarning, stacklevel: int = 2) -> None:
    """:func:`warnings.warn` that says each message once per process."""
    if message in _said:
        return
    _said.add(message)
    warnings.warn(message, category, stacklevel=stacklevel + 1)
