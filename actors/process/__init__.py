"""The process stage: reducer chains run on batches (:class:`~actors.process.worker.Worker`)."""
