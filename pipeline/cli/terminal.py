"""A quiet terminal: TensorFlow's native start-up lines (oneDNN notices, CUDA probing on a CPU machine, absl's
pre-initialisation banner) and transformers' advisory lines are dropped from stderr unless `-v` asks for them.

They are written by C++ straight to file descriptor 2, before and around `import tensorflow`, so no Python
logging setting reaches them: fd 2 is routed through a pipe whose reader drops those lines and passes every
other byte on at once (progress bars included), and the original stderr is restored at exit.
"""
from __future__ import annotations

import atexit
import logging
import os
import re
import threading

# absl / TensorFlow native log lines: "I0000 00:00:1796237851.923293    3633 port.cc:153] ..."
NATIVE_LINE = re.compile(rb"^(?:[IWE]\d{4} [\d:.]+\s+\d+ [\w./-]+:\d+\] |"
                         rb"WARNING: All log messages before absl::InitializeLog\(\) is called)")
_BANNER = b"WARNING: All log messages"


def _may_become_native(partial: bytes) -> bool:
    """A line not finished yet that could still turn out to be a native log line."""
    head = partial[:len(_BANNER)]
    return (re.match(rb"^[IWE]\d{4} ", partial) is not None or re.fullmatch(rb"[IWE]\d{0,4}", partial) is not None
            or _BANNER.startswith(head) or head.startswith(_BANNER))


def keep(chunk: bytes, pending: bytes) -> tuple[bytes, bytes]:
    """(bytes to write now, bytes held back): whole native lines are dropped; a partial line that could still
    become one is held until its newline; everything else passes at once."""
    data, out = pending + chunk, []
    while data:
        end = data.find(b"\n")
        if end < 0:
            if _may_become_native(data) and len(data) < 4096:
                return b"".join(out), data
            out.append(data)
            return b"".join(out), b""
        line, data = data[:end + 1], data[end + 1:]
        if not NATIVE_LINE.match(line):
            out.append(line)
    return b"".join(out), b""


def quiet_native_logs():
    """Route fd 2 through the filter for the rest of the process (and ask TensorFlow for warnings and up)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # transformers' advisory lines ("PyTorch was not found ..."): it serves tokenizers only here
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump():
        pending = b""
        while chunk := os.read(read_end, 65536):
            now, pending = keep(chunk, pending)
            if now:
                os.write(original, now)
        if pending:
            os.write(original, pending)

    thread = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    thread.start()

    def restore():
        import sys

        sys.stderr.flush()
        os.dup2(original, 2)  # closes the pipe's last write end: the reader drains and stops
        thread.join(timeout=5)

    atexit.register(restore)


def log_to_stderr(quiet: bool = False) -> logging.Logger:
    """The pipeline's progress and result lines on stderr, INFO and up (WARNING with quiet): its own handler,
    since TensorFlow's absl handler joins the root logger."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log = logging.getLogger("pipeline")
    log.addHandler(handler)
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False
    return log
