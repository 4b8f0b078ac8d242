"""Data layer: cohorts (BIDS, CSV manifest, synthetic), scan loading and the volume store."""
