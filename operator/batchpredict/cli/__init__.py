"""`batchpredict`: the command line for users (local checks before `kubectl apply`)."""
