"""What several studies use: statistics, Markdown, load generators, the shipped services, servers to start."""
