"""The results stage: merges partials in batch order, owns the acquisition lifecycle and its
files (:class:`~actors.results.core.ResultsCore`, pure; :class:`~actors.results.stage.
ResultsStage`, the thread-safe stage both backends host)."""
