"""The lab: what the copier is tested, measured and demonstrated with (harness, demo, bench, soak). Never deployed."""
