"""Migrations of the cmpay app."""
