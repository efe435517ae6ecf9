"""StepLoop's worker for a step's report (backend.training.step.BehindUpdate): jobs run in
order on one other thread, `wait` hands their first failure to the training thread, and the
inline mode (`telemetry.report_behind_update = false`) runs each job on the caller's thread."""

import threading
import time

import pytest

from backend.bus import LogUnwritable
from backend.training.step import BehindUpdate


def test_jobs_run_in_order_on_one_other_thread_and_wait_waits_for_all():
    behind = BehindUpdate()
    ran: list[tuple[int, str]] = []
    for i in range(5):
        behind.submit(lambda i=i: (time.sleep(0.02 if i == 0 else 0), ran.append((i, threading.current_thread().name))))
    behind.wait()
    assert [i for i, _ in ran] == [0, 1, 2, 3, 4]
    assert {name for _, name in ran} != {threading.current_thread().name}
    assert len({name for _, name in ran}) == 1 and ran[0][1].startswith("rlc-report")
    behind.close()


def test_wait_raises_the_first_failure_on_the_callers_thread_after_every_job_ran():
    behind = BehindUpdate()
    ran = []

    def broken() -> None:
        raise LogUnwritable("the event log cannot be written (OperationalError: database or disk is full)")

    behind.submit(lambda: ran.append(1))
    behind.submit(broken)
    behind.submit(lambda: (_ for _ in ()).throw(ValueError("second")))
    behind.submit(lambda: ran.append(2))
    with pytest.raises(LogUnwritable, match="disk is full"):
        behind.wait()
    assert ran == [1, 2]
    behind.wait()  # a failure is raised once; nothing is pending after it
    behind.close()


def test_inline_runs_each_job_at_once_on_the_callers_thread():
    behind = BehindUpdate(inline=True)
    ran = []
    behind.submit(lambda: ran.append(threading.current_thread().name))
    assert ran == [threading.current_thread().name]
    with pytest.raises(ValueError):
        behind.submit(lambda: (_ for _ in ()).throw(ValueError("at once")))
    behind.wait()
    behind.close()


def test_jobs_wait_for_release_which_the_trainer_gives_before_backward():
    behind = BehindUpdate()
    ran = []
    behind.submit(lambda: ran.append("groups"))
    time.sleep(0.05)
    assert ran == []  # held: started during the loss's forward it would contend for the GIL op by op
    behind.release()
    behind.wait()
    assert ran == ["groups"]
    behind.close()

