"""Signals other code may connect to."""

from django.dispatch import Signal

# Sent after a message's status changed and its MessageEvent was written, with the keyword
# arguments message, old_status, new_status, event. The sender is the Message class.
message_status_changed = Signal()
