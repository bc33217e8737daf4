"""Notifications of a job's events (a stop, a failure) to people and programs.

`signing` is pure (the canonical JSON body of an event and its HMAC signature, stdlib only); `channels` is the
shell that sends one event once over Apprise (chat services), a signed webhook POST or a local command, and
`deliver` retries it; `checks` refuses a bad notify setting with an `InputError` naming the field.
"""
