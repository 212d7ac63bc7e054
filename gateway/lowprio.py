"""Worker threads for large requests' CPU work, at a lower OS scheduling priority.

A long routing text (a prompt at the embedder's full window) costs the local embedder ~25x a
short question: ~85 ms of ONNX on an idle core. Run on the batcher's one worker it made every
short text queued behind it wait that long; run on another thread at normal priority it takes
the CPU from the event loop and the short texts' embedding. The threads made here lower their
own priority (Linux: a thread is a schedulable task with its own nice value, so `setpriority`
on its native id affects that thread only), so the kernel gives the loop and the short texts
the CPU first and the large request, which takes long anyway, absorbs the wait.

Only work that releases the interpreter lock belongs here (ONNX Runtime's `run`): a
low-priority thread holding the lock would make the loop wait for it (priority inversion);
tiktoken's encoder, for one, holds it (`gateway/tokens.py` samples very long texts instead).
Where the platform or the process's limits refuse the change, the threads run at normal
priority (logged at debug): slower under contention, never wrong.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger("r2.gateway")

#: How much nicer than the process the low-priority threads run (CFS weight about 1:10).
NICE_DELTA = 10


def lower_this_thread(delta: int = NICE_DELTA) -> bool:
    """Raise the calling thread's nice value by `delta`; False where that is not possible."""
    if not hasattr(os, "setpriority"):
        return False
    try:
        tid = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, current + delta))
    except OSError:
        log.debug("could not lower a worker thread's priority; it runs at normal priority")
        return False
    return True


def low_priority_executor(name: str, workers: int = 1) -> ThreadPoolExecutor:
    """A thread pool whose threads run `NICE_DELTA` nicer than the process."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name,
                              initializer=lower_this_thread)
