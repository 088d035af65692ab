"""A real one-node SLURM cluster for the tests: munge, slurmctld and slurmd on localhost.

Everything lives in one folder (configuration, munge key and socket, state, spool, logs), so
nothing system-wide is read or written; the daemons run in the foreground in process groups of
their own and :meth:`Cluster.stop` kills those groups. Needs root and Debian's ``slurm-wlm`` and
``munge``. SLURM has no accounting here (no slurmdbd, so no sacct): finished jobs are read from
the ``jobcomp/filetxt`` file, one line per job.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "scontrol", "sinfo", "squeue", "scancel")
#: Job states of a job that has ended.
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
         "PREEMPTED", "BOOT_FAIL", "DEADLINE"}


def missing_programs() -> list[str]:
    """The SLURM and munge programs this machine lacks."""
    return [name for name in DAEMONS + CLIENTS
            if shutil.which(name) is None and not Path("/usr/sbin", name).exists()]


def _program(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def slurm_conf(root: Path, host: str, *, cpus: int, memory_mb: int) -> str:
    """A minimal slurm.conf: one node of ``cpus`` CPUs, one partition, munge on our socket."""
    return "\n".join([
        "ClusterName=bidsapptest",
        f"SlurmctldHost={host}(127.0.0.1)",
        f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
        "SlurmUser=root", "SlurmdUser=root",
        "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={root}/munge/socket",
        f"StateSaveLocation={root}/state", f"SlurmdSpoolDir={root}/spool",
        f"SlurmctldPidFile={root}/slurmctld.pid", f"SlurmdPidFile={root}/slurmd.pid",
        f"SlurmctldLogFile={root}/log/slurmctld.log", f"SlurmdLogFile={root}/log/slurmd.log",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/filetxt", f"JobCompLoc={root}/log/jobcomp.txt",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
        "SchedulerType=sched/backfill", "SchedulerParameters=sched_interval=2",
        "MpiDefault=none", "ReturnToService=2", "MinJobAge=3600",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN",
        f"PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


class Cluster:
    """munge + slurmctld + slurmd in ``root``; use :meth:`start`, then :meth:`stop` always."""

    def __init__(self, root: Path, *, cpus: int = 2, memory_mb: int = 8000):
        self.root = Path(root)
        self.cpus, self.memory_mb = cpus, memory_mb
        self.conf = self.root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.processes: list[subprocess.Popen] = []

    def _spawn(self, *command: str) -> None:
        log = open(self.root / "log" / f"{Path(command[0]).name}.stdout", "wb")  # noqa: SIM115
        self.processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                               env=self.env, start_new_session=True))
        log.close()

    def start(self, timeout: float = 60) -> None:
        for name in ("munge", "state", "spool", "log", "keys"):
            (self.root / name).mkdir(parents=True, exist_ok=True)
        keys = self.root / "keys"
        keys.chmod(0o700)
        (keys / "munge.key").write_bytes(os.urandom(1024))
        (keys / "munge.key").chmod(0o600)
        host = socket.gethostname().split(".")[0]
        self.conf.write_text(slurm_conf(self.root, host, cpus=self.cpus,
                                        memory_mb=self.memory_mb))
        self._spawn(_program("munged"), "-F", "--force", f"--socket={self.root}/munge/socket",
                    f"--key-file={keys}/munge.key", f"--pid-file={self.root}/munge/munged.pid",
                    f"--seed-file={self.root}/munge/seed",
                    f"--log-file={self.root}/log/munged.log")
        self._wait_for(lambda: (self.root / "munge/socket").exists(), timeout, "munged")
        self._spawn(_program("slurmctld"), "-D", "-c", "-f", str(self.conf))
        self._wait_for(lambda: self._run("scontrol", "ping").returncode == 0, timeout,
                       "slurmctld")
        self._spawn(_program("slurmd"), "-D", "-f", str(self.conf))
        self._wait_for(lambda: "idle" in self._run("sinfo", "-h", "-o", "%T").stdout, timeout,
                       "slurmd (node idle)")

    def _wait_for(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [p.args[0] for p in self.processes if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{', '.join(dead)} exited while starting {what}:\n"
                                   f"{self.logs()}")
            if ready():
                return
            time.sleep(0.5)
        raise RuntimeError(f"{what} not ready after {timeout:.0f} s:\n{self.logs()}")

    def _run(self, *command: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(command, env=self.env, cwd=cwd, capture_output=True, text=True,
                              timeout=60)

    def sbatch(self, *args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
        """Submit with ``sbatch --parsable``; the job id. ``env`` adds to the environment that
        sbatch passes on to the job (its default, ``--export=ALL``)."""
        proc = subprocess.run([_program("sbatch"), "--parsable", *args], cwd=cwd,
                              env={**self.env, **(env or {})}, capture_output=True, text=True,
                              timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"sbatch {' '.join(args)} failed: {proc.stderr}")
        return proc.stdout.strip().split(";")[0]

    def finished(self) -> list[dict[str, str]]:
        """One dict per ended job (JobId, JobState, ExitCode, ArrayJobId, ArrayTaskId, StartTime,
        EndTime, ...), from the job completion file."""
        path = self.root / "log" / "jobcomp.txt"
        jobs = []
        for line in path.read_text().splitlines() if path.is_file() else []:
            fields = dict(part.split("=", 1) for part in line.split(" ") if "=" in part)
            jobs.append(fields)
        return jobs

    def wait(self, job_ids: list[str], timeout: float) -> dict[str, list[dict[str, str]]]:
        """Wait until every job (an array counts when all its tasks ended) has ended; the ended
        records of each job id. Raises TimeoutError with the queue and logs past ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            queue = self._run("squeue", "-h", "-o", "%i %T").stdout
            pending = [j for j in job_ids if any(
                line.split("_")[0].split(" ")[0] == j for line in queue.splitlines())]
            if not pending:
                ended = self.finished()
                return {j: [r for r in ended if r.get("ArrayJobId", r["JobId"]) == j
                            or r["JobId"] == j] for j in job_ids}
            if time.monotonic() > deadline:
                raise TimeoutError(f"jobs {pending} still queued after {timeout:.0f} s:\n"
                                   f"{queue}\n{self.logs()}")
            time.sleep(2)

    def logs(self, tail: int = 20) -> str:
        parts = []
        for path in sorted((self.root / "log").glob("*")):
            lines = path.read_text(errors="replace").splitlines()[-tail:]
            parts.append(f"--- {path.name}\n" + "\n".join(lines))
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel this cluster's jobs, then kill every daemon's process group and reap."""
        if self.processes and all(p.poll() is None for p in self.processes):
            self._run("scancel", "--full", f"--user={os.getuid()}")
            deadline = time.monotonic() + 20
            while self._run("squeue", "-h").stdout.strip() and time.monotonic() < deadline:
                time.sleep(1)
        for proc in reversed(self.processes):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in reversed(self.processes):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)
        self.processes.clear()
