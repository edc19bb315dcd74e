"""Runnable task-queue recipes for cmpay-async (Celery, arq, taskiq, a plain anyio worker).

Each recipe does the same three jobs, and the test suite runs each one with real workers:
place a payment (idempotent: a job may run twice), handle a notification (the Celery recipe
through ``cmpay_async.inbox``; the others verify a raw body), and reconcile orders left
pending. Arguments and results cross the queue as ``to_dict()`` data
or raw bodies, never as pickled objects.
"""
