"""nipype workflows.

Worker processes of nipype's MultiProc plugin are started fresh ("spawn") and import this
package; when ``BIDSAPP_WORKER_LOG`` is set, their console output (nipype's log chatter) is sent
to that file so the terminal shows only bidsapp's progress.
"""

import multiprocessing
import os


def _is_worker() -> bool:
    """True in a worker process, also while "spawn" imports the parent's ``__main__`` into it
    (the console script imports this package then, before ``parent_process()`` is set; the
    child's name is already set)."""
    return (multiprocessing.parent_process() is not None
            or multiprocessing.current_process().name != "MainProcess")


def _redirect_worker_output() -> None:
    path = os.environ.get("BIDSAPP_WORKER_LOG")
    if not path or not _is_worker():
        return
    handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(handle, 1)
    os.dup2(handle, 2)
    os.close(handle)


_redirect_worker_output()
