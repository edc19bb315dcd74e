"""The sandbox gateway and the command line."""
