"""The vendor's public test merchant and its signKey (PROTOCOL.md section 6): not secrets.

A leaf module, so that the sandbox, the demo and the command line take them from one place
without importing one another.
"""

from __future__ import annotations

__all__ = ["PUBLIC_TEST_KEY", "PUBLIC_TEST_MERCHANT"]

#: The vendor's public test merchant id.
PUBLIC_TEST_MERCHANT = "888009941120001"
#: The public test merchant's signKey, published by the vendor: not a secret.
PUBLIC_TEST_KEY = "8Fb5j7RAYj4Dw3s6bZ11hVynY9oyx0LHdTz3Xww8xmNsfzGd1qABCerSz0ZRXMA3"
