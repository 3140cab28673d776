"""The dispatch stage: which batch goes to which worker, retries and give-ups
(:class:`~actors.dispatch.dispatcher.Dispatcher`, pure; driven by both backends)."""
