"""NotificationProcessor: verify, claim once across workers, handle, then answer SUCCESS.

CMPay announces a payment up to nine times from two directions (the buyer's PageNotify and
up to 8 OfflineNotify attempts), often to several workers at the same moment, and
reconciliation may find the same payment by querying. All of them are one event, keyed by
merchant id, order id and outcome (SUCCESS or FAILED): the document makes the order id the
merchant's unique key of a payment, and a PageNotify and an OfflineNotify of one payment
carry the same three values. A store's lease makes the handler run once per key: a
duplicate that is done is answered SUCCESS without the handler; one in progress elsewhere
is answered FAIL, so the gateway retries later; a handler that raises releases the key and
is answered FAIL too.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Literal

import attrs

from ._codec import Payload
from ._enums import PaymentStatus
from ._exceptions import CmpayError
from ._models import OfflineNotify, OrderQueryResult, PageNotify
from ._notify import Ack, ack, nack, verify_notification
from ._signing import Verifier
from .stores import ClaimState, Store

__all__ = ["NotificationProcessor", "PaymentEvent", "event_key"]

logger = logging.getLogger("cmpay_async")

Source = Literal["PageNotify", "OfflineNotify", "reconciliation"]


def event_key(merchant_id: str, order_id: str, status: str) -> str:
    """The key that makes every announcement of one payment outcome one event."""
    return f"cmpay:{merchant_id}:{order_id}:{status}"


@attrs.frozen(kw_only=True)
class PaymentEvent:
    """One payment outcome, handed to the merchant's handler exactly once."""

    #: Where it came from: ``PageNotify``, ``OfflineNotify`` or ``reconciliation``.
    source: Source
    key: str
    order_id: str
    paid: bool
    #: The paid amount in fen (check it against your order before crediting it).
    amount: int | None
    pay_no: str
    notification: PageNotify | OfflineNotify | None = None
    query: OrderQueryResult | None = None


#: The answer to a notification that did not verify: never SUCCESS.
REFUSED = Ack(status_code=400, body=b"FAIL")


class NotificationProcessor:
    """Ties verification, a store and the merchant's handler together."""

    def __init__(
        self,
        *,
        verifier: Verifier,
        merchant_id: str,
        store: Store,
        handler: Callable[[PaymentEvent], Awaitable[object]],
        lease: float = 60.0,
    ) -> None:
        self.verifier = verifier
        self.merchant_id = merchant_id
        self.store = store
        self.handler = handler
        #: Seconds a worker owns an event; keep it above your handler's longest run.
        self.lease = lease

    async def process(self, payload: Payload, *, charset: str | None = None) -> Ack:
        """Verify a notification and handle it once; return the answer for the gateway."""
        try:
            note = verify_notification(
                payload, verifier=self.verifier, merchant_id=self.merchant_id, charset=charset
            )
        except CmpayError as exc:
            logger.warning("refused a notification: %s", exc)
            return REFUSED
        handled = await self._once(_event_of(note))
        return ack() if handled else nack()

    async def process_result(self, result: OrderQueryResult) -> bool:
        """Feed a reconciliation query's result through the same once-only path.

        Returns True when the event is handled (now or before); a pending or unknown order
        is not an event (False).
        """
        if result.status not in (PaymentStatus.SUCCESS.value, PaymentStatus.FAILED.value):
            return False
        event = PaymentEvent(
            source="reconciliation",
            key=event_key(result.merchant_id, result.order_id, result.status),
            order_id=result.order_id,
            paid=result.paid,
            amount=result.amount,
            pay_no=result.pay_no,
            query=result,
        )
        return await self._once(event)

    async def _once(self, event: PaymentEvent) -> bool:
        """Run the handler if this worker wins the key; True once the event is done."""
        claimed = await self.store.claim(event.key, lease=self.lease)
        if claimed.state is ClaimState.DONE:
            return True
        if claimed.state is ClaimState.IN_PROGRESS or claimed.token is None:
            return False  # another worker has it: the gateway will ask again
        try:
            await self.handler(event)
        except Exception:
            logger.exception("the payment handler failed for %s; released for a retry", event.key)
            await self.store.release(event.key, claimed.token)
            return False
        if not await self.store.complete(event.key, claimed.token):
            logger.error(
                "the handler for %s outlived its %s s lease: another worker may run it too",
                event.key,
                self.lease,
            )
        return True


def _event_of(note: PageNotify | OfflineNotify) -> PaymentEvent:
    return PaymentEvent(
        source="PageNotify" if isinstance(note, PageNotify) else "OfflineNotify",
        key=event_key(note.merchant_id, note.order_id, note.status.value),
        order_id=note.order_id,
        paid=note.paid,
        amount=note.amount,
        pay_no=note.pay_no,
        notification=note,
    )
