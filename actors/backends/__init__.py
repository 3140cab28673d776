"""The two transports of the pipeline's stages: :mod:`actors.backends.ray` (Ray actors and
the object store) and :mod:`actors.backends.local` (processes over shared memory). Each only
moves data and messages; the stages' logic is in :mod:`actors.ingest`,
:mod:`actors.dispatch`, :mod:`actors.process` and :mod:`actors.results`."""
