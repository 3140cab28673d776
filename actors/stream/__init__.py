"""ZMQ transport: sockets, the async receiver and its frame ledger."""
