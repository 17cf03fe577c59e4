"""What watches a running cluster's :class:`~tfos._control.reservation.Reservation`: pure logic, no threads.

Whoever serves the control plane runs the same checks: the driver's monitor on a classic session
(``TFCluster._watch``, one :class:`Watch` per attempt) and node 0's control host under Spark Connect
(``tfos._connect.control.ControlHost``). Each calls :meth:`Watch.check` under the control lock every heartbeat
interval; time comes from the reservation's clock, so unit tests drive it with a fake one.
"""

from __future__ import annotations

import time
from typing import Callable

from ..errors import NodeFailure
from .reservation import Phase, Reservation


class Watch:
    """The checks of one start of a cluster: lost and hung nodes, the reservation deadline, and (where no driver
    will ask for it) stopping the service nodes once training is done.

    Args:
        reservation: the attempt's reservation (call every method under its control lock).
        reservation_timeout: seconds the nodes have to register, from the watch's creation; None when another
            part waits for the reservation (the classic driver's ``run()``, which raises its own error).
        late_message: the failure message for nodes that did not register in time, given their worker numbers.
        stop_when_trained: ask the service nodes (ps, evaluator) to stop as soon as the training nodes are done
            (node 0 under Spark Connect; the classic driver does it in ``shutdown()``, after ``grace_secs``).
        stop_grace: seconds a failed cluster's nodes get to stop and report before :meth:`ended` says it is over.
        clock: the reservation's clock.
    """

    def __init__(self, reservation: Reservation, *, reservation_timeout: float | None,
                 late_message: Callable[[list[int]], str], stop_when_trained: bool, stop_grace: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.reservation = reservation
        self._timeout = reservation_timeout
        self._late_message = late_message
        self._stop_when_trained = stop_when_trained
        self._stop_grace = stop_grace
        self._clock = clock
        self._started = clock()
        self._failed_at: float | None = None

    def check(self) -> list[NodeFailure]:
        """Runs every check once; returns the nodes newly found lost or hung."""
        state = self.reservation
        found = state.check_lost() + state.check_hung()
        if (state.phase is Phase.RESERVING and self._timeout is not None
                and self._clock() - self._started > self._timeout):
            state.abort(NodeFailure(-1, "reservation", time=time.time(), message=self._late_message(state.missing())))
        if self._stop_when_trained and state.phase is Phase.RUNNING and state.training_done():
            state.request_stop()
        if state.phase is Phase.FAILED and self._failed_at is None:
            self._failed_at = self._clock()
        return found

    def ended(self) -> bool:
        """The cluster is over: done, or failed and every node exited (or had ``stop_grace`` seconds to)."""
        state = self.reservation
        if state.phase is Phase.DONE:
            return True
        if state.phase is not Phase.FAILED:
            return False
        return state.all_exited() or (self._failed_at is not None and self._clock() - self._failed_at > self._stop_grace)
