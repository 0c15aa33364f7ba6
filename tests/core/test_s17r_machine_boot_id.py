"""A claim names its machine (`run_host`) so that a process starting up ends only the claims of processes of its own
machine that have exited. The host name and the PID namespace's inode are not enough: outside containers the
namespace is the same constant on every Linux host, so two hosts given the same name (cloned images, a default
`localhost`) looked like one, and a start on one took a live run on the other for dead (its pid is not here) and ran
the job twice. The machine is also told by its boot (`/proc/sys/kernel/random/boot_id`)."""

from __future__ import annotations

import datetime as dt
import subprocess
import uuid
from pathlib import Path

import sqlalchemy as sa

from core import jobs
from core.models import Job, JobStatus
from core.runtime import Runtime
from tests.core.job_deliveries import only_job

RUNS: list[str] = []


@jobs.actor("tests.s17r_held_elsewhere", max_retries=3, with_uow=False, time_limit_ms=600_000)
def s17r_held_elsewhere(name: str) -> None:
    RUNS.append(name)


def _boot(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.write_text(f"{uuid.uuid4()}\n")
    return path


def test_the_machine_is_told_by_its_boot(tmp_path: Path) -> None:
    one, other = _boot(tmp_path, "one"), _boot(tmp_path, "other")
    assert jobs._machine(boot_id_file=str(one)) == jobs._machine(boot_id_file=str(one))
    assert jobs._machine(boot_id_file=str(one)) != jobs._machine(boot_id_file=str(other)), (
        "two hosts of the same name and PID namespace, booted apart, are one machine"
    )
    # Where there is no boot id to read, the host name and the PID namespace still tell machines apart.
    assert jobs._machine(boot_id_file=str(tmp_path / "missing"))


def test_a_start_leaves_a_claim_of_a_host_of_the_same_name_to_its_time_limit(runtime: Runtime, tmp_path: Path) -> None:
    """A broker-less start (`giving serve`, `giving receipts annual`) on this host, while a run on another host of
    the same name holds the job: that run's pid is no process here, yet the run is alive."""
    with runtime.unit_of_work() as uow:
        uow.enqueue("tests.s17r_held_elsewhere", name="elsewhere")
        uow.jobs.clear()
    gone = subprocess.Popen(["true"])  # a pid no process of this machine has now
    gone.wait()
    other_host = jobs._machine(boot_id_file=str(_boot(tmp_path, "other host")))
    until = jobs.utc_now() + dt.timedelta(minutes=10)
    with runtime.unit_of_work() as uow:
        uow.session.execute(
            sa.update(Job.__table__).values(  # type: ignore[attr-defined]
                attempts=1,
                run_id=uuid.uuid4(),
                running_until=until,
                run_host=other_host,
                run_process=f"{gone.pid}:1",
                last_sent_at=until,
            )
        )
    before = only_job(runtime)

    assert not jobs.process_exited(other_host, f"{gone.pid}:1")
    with runtime.unit_of_work() as uow:
        sent = jobs.resend_pending(uow, older_than=dt.timedelta(0))
        uow.jobs.clear()
    row = only_job(runtime)
    assert sent == 0, "the start took a live run of another host for dead"
    assert (row.status, row.run_id, row.run_host) == (JobStatus.PENDING, before.run_id, other_host)
