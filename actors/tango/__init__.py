"""The asyncio Tango device ``Rayline`` that publishes a pipeline's results.

* :mod:`.control` — what the device needs from a pipeline (``Control``); implementations
  :mod:`.ray_control` (Ray actor handles) and :mod:`.pipeline_control` (a sync pipeline).
* :mod:`.declare` — reducer outputs and parameters → attribute declarations (pure).
* :mod:`.device` — the device class (a thin mapping) and its generated subclass.
* :mod:`.live` — the one polling task that publishes events.
* :mod:`.server` — ``run_server`` and the standalone ``python -m actors.tango.server``.
* :mod:`.host` — a server thread, or a spawned server process; :mod:`.actor` — the Ray actor.
"""
