"""Latency statistics (stats.py) and memory sampling of engine runs."""
