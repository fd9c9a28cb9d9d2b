"""What both implementations use: settings, models, the work itself, the task ledger."""
