"""The asynchronous runner and the run folder it writes."""
