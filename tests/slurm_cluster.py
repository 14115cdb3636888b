"""A real one-node SLURM cluster for the tests: munge, slurmctld and slurmd from a generated
config in a temporary folder, stopped by pid (only the daemons it started).

Debian's ``slurm-wlm`` (``.ci/run`` installs it) and root are needed; elsewhere the fixture skips
with a one-line reason. SLURM's own clients (sbatch, squeue, scontrol, scancel) find the cluster
through ``SLURM_CONF``, which :attr:`SlurmCluster.env` carries.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "sinfo")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def why_not() -> str | None:
    """One line saying why no cluster can start here, or None."""
    missing = [d for d in DAEMONS if shutil.which(d) is None]
    if missing:
        return f"SLURM not installed ({', '.join(missing)} missing; apt-get install slurm-wlm)"
    if os.geteuid() != 0:
        return "starting slurmd needs root (the tests run as another user)"
    if not Path("/etc/munge/munge.key").exists():
        return "no /etc/munge/munge.key (reinstall munge)"
    return None


@dataclass
class SlurmCluster:
    """A started cluster: its folder, config and the processes to stop."""

    root: Path
    conf: Path
    node: str
    procs: list[subprocess.Popen] = field(default_factory=list)
    started_munge: int | None = None

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            list(args), capture_output=True, text=True, env={**os.environ, **self.env}, timeout=60
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: {proc.stderr.strip()}")
        return proc

    def jobs(self) -> list[dict]:
        """The jobs squeue knows: id, state, name."""
        out = self.run("squeue", "-h", "-o", "%i|%T|%j", check=False).stdout
        return [
            dict(zip(("id", "state", "name"), line.split("|"), strict=True))
            for line in out.splitlines()
            if line.count("|") == 2
        ]

    def wait_for(self, predicate, timeout: float = 120, what: str = "the cluster") -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return
            time.sleep(0.5)
        logs = "\n".join(
            f"{p.name}: {p.read_text()[-1500:]}" for p in self.root.glob("*.log") if p.exists()
        )
        raise TimeoutError(f"timed out waiting for {what}\n{logs}")

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        if self.started_munge:
            try:
                os.kill(self.started_munge, 15)
            except ProcessLookupError:
                pass


def _config(root: Path, node: str, cpus: int, mem_mb: int) -> str:
    return f"""ClusterName=medbench
SlurmctldHost={node}
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=5
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName={node} CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
"""


def _start_munge(root: Path) -> int | None:
    """munged as the munge user (its run folder owned by munge); None if one already runs."""
    if subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode == 0:
        return None
    run = Path("/run/munge")
    run.mkdir(parents=True, exist_ok=True)
    shutil.chown(run, "munge", "munge")
    subprocess.run(
        ["runuser", "-u", "munge", "--", "munged"], check=True, capture_output=True, timeout=30
    )
    pid = subprocess.run(["pgrep", "-n", "-x", "munged"], capture_output=True, text=True)
    return int(pid.stdout.strip()) if pid.returncode == 0 else None


def start_cluster(root: Path) -> SlurmCluster:
    """Start munge (if none runs), slurmctld and slurmd; return when the node is idle."""
    node = socket.gethostname().split(".")[0]
    for sub in ("state", "spool"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    cpus = os.cpu_count() or 1
    mem_mb = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.8)
    conf = root / "slurm.conf"
    conf.write_text(_config(root, node, cpus, mem_mb))
    cluster = SlurmCluster(root, conf, node)
    cluster.started_munge = _start_munge(root)
    env = {**os.environ, "SLURM_CONF": str(conf)}
    for daemon in ("slurmctld", "slurmd"):
        log = open(root / f"{daemon}.out", "w")  # noqa: SIM115 - lives as long as the daemon
        cluster.procs.append(
            subprocess.Popen([daemon, "-D", "-f", str(conf)], env=env, stdout=log, stderr=log)
        )
        if daemon == "slurmctld":
            cluster.wait_for(
                lambda: cluster.run("scontrol", "ping", check=False).returncode == 0,
                60,
                "slurmctld",
            )
    cluster.wait_for(
        lambda: "idle" in cluster.run("sinfo", "-h", "-o", "%T", check=False).stdout,
        60,
        "the node to be idle",
    )
    return cluster
