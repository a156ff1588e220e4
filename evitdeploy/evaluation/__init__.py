"""`evitdeploy eval`: task metrics on the user's labelled data (datasets.py reads the layouts,
scores.py the metrics with bootstrap intervals, run.py the streamed loop)."""
