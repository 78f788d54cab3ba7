"""Reports: the terminal summary, the profile listing (JSON and HTML come later)."""
