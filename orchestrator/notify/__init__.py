"""Notifications: stop decisions, shadow proposals, reallocations, blueprints and failures pushed to people
(Apprise URLs, a signed JSON webhook, a command), sent off the controller's path with retries (docs/notify.md)."""
