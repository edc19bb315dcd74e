"""Notifications: verification, the processor, its stores and the inbox."""
