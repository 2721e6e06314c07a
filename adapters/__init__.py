"""Platform edges: each turns a platform's events into `bot.events.Event` and registers a sender for its replies."""
