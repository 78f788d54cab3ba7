"""Engine adapters, one per file, behind the small ``Engine`` protocol of ``base.py``."""
