"""Shop apps served by real servers (gunicorn, uvicorn) in tests/test_servers.py."""
