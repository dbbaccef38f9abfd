"""`make bench`: the ways to serve the models side by side, and the studies its report appends."""
