"""`make demo`: a real batch prediction end to end (see demo/__main__.py)."""
