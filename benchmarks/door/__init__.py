"""The door: its overhead and its protection against a flood; the bytes of log written per request."""
