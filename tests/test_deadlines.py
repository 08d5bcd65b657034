"""chatd.deadlines on a Clock: one DelayedCall for every connection's deadline."""

from twisted.internet.task import Clock

from chatd.deadlines import RESOLUTION, Deadlines


def test_deadlines_fire_at_their_time_or_a_bucket_later_never_earlier_and_once():
    clock = Clock()
    deadlines, fired = Deadlines(clock), []
    for owner, delay in (("a", 1.0), ("b", 1.1), ("c", 3.0)):
        deadlines.set(owner, delay, lambda owner=owner: fired.append((owner, clock.seconds())))
    assert len(clock.getDelayedCalls()) == 1 and len(deadlines) == 3
    clock.advance(0.99)
    assert fired == []
    clock.pump([0.01] * 40)
    assert [owner for owner, _ in fired] == ["a", "b"]
    assert all(delay <= at <= delay + RESOLUTION for (_, at), delay in zip(fired, (1.0, 1.1)))
    clock.advance(2)
    assert [owner for owner, _ in fired] == ["a", "b", "c"] and len(deadlines) == 0
    assert clock.getDelayedCalls() == []


def test_a_deadline_set_again_replaces_the_old_one_and_an_earlier_one_rearms_the_timer():
    clock = Clock()
    deadlines, fired = Deadlines(clock), []
    deadlines.set("a", 10, lambda: fired.append("a at 10"))
    deadlines.set("a", 20, lambda: fired.append("a at 20"))     # replaces
    deadlines.set("b", 1, lambda: fired.append("b"))            # earlier than the armed bucket
    clock.advance(1.25)
    assert fired == ["b"]
    clock.advance(10)
    assert fired == ["b"]
    clock.advance(10)
    assert fired == ["b", "a at 20"]


def test_a_callback_may_set_its_next_deadline_and_cancelling_the_last_leaves_no_timer():
    clock = Clock()
    deadlines, fired = Deadlines(clock), []

    def again():
        fired.append(clock.seconds())
        if len(fired) < 3:
            deadlines.set("a", 5, again)

    deadlines.set("a", 5, again)
    deadlines.set("b", 60, lambda: fired.append("b"))
    clock.pump([1] * 20)
    assert fired == [5, 10, 15]
    deadlines.cancel("b")
    assert len(deadlines) == 0 and clock.getDelayedCalls() == []


def test_a_callback_may_cancel_another_deadline_of_the_same_bucket():
    clock = Clock()
    deadlines, fired = Deadlines(clock), []
    deadlines.set("a", 1, lambda: (fired.append("a"), deadlines.cancel("b")))
    deadlines.set("b", 1, lambda: fired.append("b"))
    clock.advance(2)
    assert fired == ["a"] and len(deadlines) == 0
