"""CmpayClient and its blocking twin: calls, errors, deadlines, cancel, in-doubt, lifecycle."""
