"""Reports: terminal summary, profile listing, JSON, HTML and a pytest-benchmark export."""
