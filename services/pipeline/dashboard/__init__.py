"""``btp dashboard``: a live page over the services' read APIs and the run folders (see app.py)."""
