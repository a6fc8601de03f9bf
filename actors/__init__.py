"""Ray actors: the WorkTracker lease table, scaler agents, the autoresearch loop."""
