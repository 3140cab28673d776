"""Generic reducers: sum / mean / max images, per-frame totals, ROIs, radial profile, hits."""
