"""nipype's MultiProc plugin, made to survive a worker process that the system kills.

When a worker of nipype's process pool dies (the out-of-memory killer, a stray ``kill``), the
pool breaks and nipype's callback raises in a background thread: the task's result never
arrives and the run waits forever. Here such a task fails like any crashed step (with the
reason in its crash file), the broken pool is replaced, and the run goes on; a rerun redoes the
failed steps.
"""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor

from nipype.pipeline.plugins.multiproc import MultiProcPlugin, process_initializer


class ResilientMultiProcPlugin(MultiProcPlugin):
    """MultiProc whose tasks fail, instead of hanging, when their worker process dies."""

    def __init__(self, plugin_args=None):
        super().__init__(plugin_args=plugin_args)
        self._pool_broken = False

    def _async_callback(self, future):
        try:
            super()._async_callback(future)
        except BaseException as exc:  # BrokenProcessPool: the worker is gone
            # a future that fails at once calls back before nipype has filed it: the newest task
            taskid = next((t for t, f in list(self._task_obj.items()) if f is future),
                          self._taskid)
            self._pool_broken = True
            self._taskresult[taskid] = {
                "result": None, "taskid": taskid,
                "traceback": [f"WorkerDied: the worker process running this step was killed "
                              f"({type(exc).__name__}); rerun the same command to redo it\n"],
            }

    def _report_crash(self, node, result=None):
        """The traceback kept on the node for the closing summary (first: writing the crash
        file may fail, e.g. on a full disk), then nipype's crash file."""
        traceback = (result or {}).get("traceback")
        node.bidsapp_traceback = "".join(traceback) if isinstance(traceback, (list, tuple)) \
            else str(traceback or "")
        return super()._report_crash(node, result=result)

    def _submit_job(self, node, updatehash=False):
        if self._pool_broken:
            self.pool.shutdown(wait=False, cancel_futures=True)
            context = mp.get_context(self.plugin_args.get("mp_context"))
            self.pool = ProcessPoolExecutor(max_workers=self.processors,
                                            initializer=process_initializer,
                                            initargs=(self._cwd,), mp_context=context)
            self._pool_broken = False
        return super()._submit_job(node, updatehash=updatehash)
