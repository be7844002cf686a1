"""`kubectl batchpredict`: the user's console (main.py parses the verbs and prints).

What the verbs do lives in plain functions that print nothing, for the dashboard too:
  kube.connect(Target) -> Kube          the user's kubeconfig/context; ConsoleError on refusals
  inspect.list_rows, inspect.load_detail runs as runs.RunRow / runs.RunDetail (rounds, shards)
  outputs.run_outputs                   io.results.RunOutputs of a run (predictions, failures)
  control.submit/retry/suspend/cancel   the patches of actions.py, sent as the user
  predict.predict                       items through a spec's exact worker path
  version.versions                      plugin, operator and CRD versions
render.py draws them with rich; watch.py follows a run until its outcome.
"""
