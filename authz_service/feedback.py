"""What Envoy reports after a request, routed to the policy in force.

Envoy's gRPC access-log stream belongs to the serving process and outlives policy reloads;
what listens belongs to one policy's layers. The hub connects them: the newest routing
layer attaches its provider-health board, the newest cost layer its lease release, and
each finished request flows to them."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from authz_service.layers.routing.health import HealthBoard, Observation

Finished = Callable[[str, int], None]
"""Told ``(reservation id, reserved tokens)`` of each request Envoy finished."""


class FeedbackHub:
    def __init__(self) -> None:
        self._board: HealthBoard | None = None
        self._finished: Finished | None = None
        self.observations = 0

    def attach(self, board: HealthBoard) -> None:
        self._board = board

    def detach(self, board: HealthBoard) -> None:
        if self._board is board:  # a reload may have attached the new board already
            self._board = None

    def attach_finished(self, listener: Finished) -> None:
        self._finished = listener

    def detach_finished(self, listener: Finished) -> None:
        if self._finished == listener:
            self._finished = None

    def observe(self, observation: Observation) -> None:
        self.observations += 1
        if self._board is not None:
            self._board.observe(observation)

    def finished(self, reservation_id: str, reserved_tokens: int) -> None:
        if self._finished is not None:
            self._finished(reservation_id, reserved_tokens)
