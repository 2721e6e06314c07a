"""Platform edges: each turns a platform's events into `bot.runtime.Incoming` and replies back."""
