"""The watchdog of calls made on the calling thread (the weight push): a call past its deadline
is reported once, soon after the deadline; calls that return in time are not; the thread wakes
every quarter of the deadline, not four times a second."""

import threading
import time

from backend.training.watchdog import Watchdog


def test_a_call_past_its_deadline_is_reported_once_and_one_in_time_never():
    fired: list[tuple[str, float]] = []
    done = threading.Event()

    def expired(what, seconds):
        fired.append((what, seconds))
        done.set()

    dog = Watchdog(expired, poll_s=0.05)
    for _ in range(3):
        with dog.guard(0.4, "quick"):
            time.sleep(0.01)
    assert dog._poll_s == 0.1  # a quarter of the deadline
    t0 = time.monotonic()
    with dog.guard(0.3, "stuck push"):
        assert done.wait(5)
    assert [w for w, _ in fired] == ["stuck push"]
    assert 0.3 <= fired[0][1] <= 0.3 + 0.2 + 0.5  # within a quarter of the deadline of it (and some scheduling)
    assert time.monotonic() - t0 < 2


def test_the_poll_follows_the_deadline_within_its_bounds():
    dog = Watchdog(lambda *a: None)
    with dog.guard(60.0, "push"):
        assert dog._poll_s == 2.0
    with dog.guard(0.4, "push"):
        assert dog._poll_s == 0.25
    with dog.guard(4.0, "push"):
        assert dog._poll_s == 1.0


def test_stop_ends_the_thread():
    """A closed session's watchdog does not outlive it (the thread holds the session's callback)."""
    dog = Watchdog(lambda *a: None, poll_s=0.05)
    with dog.guard(0.2, "push"):
        pass
    assert dog._thread.is_alive()
    dog.stop()
    dog._thread.join(2)
    assert not dog._thread.is_alive()
