"""The asyncio Tango device ``Rayline`` that publishes a pipeline's results.

The device sees a pipeline only through its :class:`~actors.core.api.Control`, which each
backend hands over (``pipeline.control()``).

* :mod:`.pipeline_control` — the ``Control`` over a pipeline's Python API (both backends).
* :mod:`.declare` — reducer outputs and parameters → attribute declarations (pure).
* :mod:`.device` — the device class (a thin mapping) and its generated subclass.
* :mod:`.live` — the one polling task that publishes events.
* :mod:`.session` — what one server process binds its device class to.
* :mod:`.server` — ``run_server``: serve a device for a ``Control`` in this thread.
* :mod:`.host` — a server thread, or a spawned server process.
"""
