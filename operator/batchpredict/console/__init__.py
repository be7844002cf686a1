"""`kubectl batchpredict`: the user's console (main.py lists the verbs)."""
