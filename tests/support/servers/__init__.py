"""Shop apps served by real servers (gunicorn, uvicorn) in tests/integrations/test_servers.py."""
