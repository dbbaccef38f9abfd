"""Long runs that count every failure: replicas killed and rolled out under load; the soak."""
