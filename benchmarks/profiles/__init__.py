"""Where a request's time goes: the worker under py-spy, the frontend under Java Flight Recorder."""
