"""Latency statistics (stats.py), intervals of load metrics (load_stats.py) and memory
sampling of engine runs."""
