"""The Ray backend: ingest, processing and results actors, and the driver-side Pipeline."""
