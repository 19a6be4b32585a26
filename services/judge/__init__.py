"""Judge service: runs untrusted programs against unit tests inside bubblewrap sandboxes (see app.py)."""
