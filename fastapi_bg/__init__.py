"""The BackgroundTasks implementation: work runs inside the API process."""
