"""The ingest stage: messages in, acquisitions, batches, room and ledger
(:class:`~actors.ingest.core.IngestCore`, pure), and the receive loop both backends run
around it (:class:`~actors.ingest.stage.IngestStage`)."""
