"""The path from Envoy's access-log stream to the routing policy in force.

The access-log service belongs to the serving process and outlives policy reloads; the
health board belongs to one routing policy. The hub connects them: the newest routing
layer attaches its board when it starts, and observations flow to it."""

from __future__ import annotations

from authz_service.layers.routing.health import HealthBoard, Observation


class FeedbackHub:
    def __init__(self) -> None:
        self._board: HealthBoard | None = None
        self.observations = 0

    def attach(self, board: HealthBoard) -> None:
        self._board = board

    def detach(self, board: HealthBoard) -> None:
        if self._board is board:  # a reload may have attached the new board already
            self._board = None

    def observe(self, observation: Observation) -> None:
        self.observations += 1
        if self._board is not None:
            self._board.observe(observation)
