"""Models cross process boundaries: pickle, and JSON-safe dicts that round-trip exactly."""

from __future__ import annotations

import datetime as dt
import json
import pickle
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cmpay_async import (
    AmountItems,
    CouponsFlag,
    Currency,
    DecodeError,
    Md5Signer,
    Notification,
    OfflineNotify,
    Order,
    OrderQueryResult,
    OrderState,
    PageNotify,
    PaymentResponse,
    PaymentStatus,
    PayUrl,
    PeriodUnit,
    Placement,
    RefundResult,
    SignType,
    ValidationError,
    verify_notification,
)
from cmpay_async.testing import PUBLIC_TEST_KEY, sign_notification

CST = dt.timezone(dt.timedelta(hours=8))

# -- strategies written from the protocol, not from the library's type tables --------------------

text = st.text(max_size=20)
fen = st.integers(min_value=0, max_value=10**10)
dates = st.dates(min_value=dt.date(2000, 1, 1), max_value=dt.date(2099, 12, 31))
offsets = st.sampled_from([CST, dt.timezone.utc, dt.timezone(dt.timedelta(hours=-5))])
datetimes = st.builds(
    lambda d, off: d.replace(tzinfo=off),
    st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2099, 1, 1)),
    offsets,
)
amount_items = st.builds(
    AmountItems,
    cash=fen,
    top_up_card=fen,
    e_coupon=fen,
    voucher=fen,
    points=fen,
    extra=st.dictionaries(st.text(min_size=1, max_size=8), fen, max_size=3),
)
pay_urls = st.builds(
    PayUrl,
    url=st.just("https://ipos.10086.cn/ips/FormTrans3"),
    method=st.sampled_from(["post", "get"]),
    session_id=text,
    extra=st.lists(st.tuples(text, text), max_size=3).map(tuple),
    raw=text,
)
answer = {
    "merchant_id": text,
    "return_code": st.sampled_from(["000000", "RPM22201", "IPS0008"]),
    "message": text,
    "sign_type": st.sampled_from(SignType),
    "type": text,
    "version": st.just("2.0.0"),
}
orders = st.builds(
    Order,
    amount=st.integers(min_value=1, max_value=10**9),
    order_id=text,
    product_name=text,
    period=st.integers(min_value=1, max_value=999),
    period_unit=st.sampled_from(PeriodUnit),
    currency=st.just(Currency.CNY),
    bank_abbr=text,
    user_token=text,
    product_num=st.none() | st.integers(min_value=1, max_value=99999),
    coupons_flag=st.none() | st.sampled_from(CouponsFlag),
    order_date=st.none() | dates,
    mer_ac_date=st.none() | dates,
)
payment_responses = st.builds(PaymentResponse, **answer, request_id=text, pay_url=pay_urls)


def _notes(cls: type[Notification]) -> st.SearchStrategy[Any]:
    return st.builds(
        cls,
        **{**answer, "type": st.just(cls.__name__)},
        pay_no=text,
        amount=fen,
        amount_items=amount_items,
        bank_abbr=text,
        mobile=text,
        order_id=text,
        pay_date=datetimes,
        account_date=dates,
        reserved1=text,
        reserved2=text,
        status=st.sampled_from(PaymentStatus),
        order_date=dates,
        fee=fen,
    )


query_results = st.builds(
    OrderQueryResult,
    **answer,
    order_id=text,
    status=text,
    pay_no=text,
    amount=st.none() | fen,
    amount_items=st.none() | amount_items,
    bank_abbr=text,
    mobile=text,
    pay_date=st.none() | datetimes,
    order_date=st.none() | dates,
    fee=st.none() | fen,
    reserved1=text,
    reserved2=text,
)
refunds = st.builds(
    RefundResult, **answer, order_id=text, pay_no=text, amount=st.none() | fen, status=text
)

placements = st.builds(
    Placement,
    order_id=text,
    state=st.sampled_from(OrderState),
    created=st.booleans(),
    payment=st.none() | payment_responses,
    query=st.none() | query_results,
)

MODELS: dict[type, st.SearchStrategy[Any]] = {
    Order: orders,
    PaymentResponse: payment_responses,
    PayUrl: pay_urls,
    PageNotify: _notes(PageNotify),
    OfflineNotify: _notes(OfflineNotify),
    AmountItems: amount_items,
    OrderQueryResult: query_results,
    RefundResult: refunds,
    Placement: placements,
}
any_model = st.one_of(*MODELS.values())


def _json_only(value: object) -> None:
    """Fail unless ``value`` is made only of JSON's own types (no str subclasses, no floats)."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert type(key) is str
            _json_only(item)
    elif isinstance(value, list):
        for item in value:
            _json_only(item)
    else:
        assert value is None or type(value) in (str, int, bool), repr(value)


def test_every_public_model_is_covered() -> None:
    """Each public attrs model of the package has a strategy here."""
    import cmpay_async

    public = {
        obj
        for name in cmpay_async.__all__
        if attrs.has(obj := getattr(cmpay_async, name))
        and hasattr(obj, "to_dict")
        and name not in ("Model", "GatewayAnswer", "Notification")
    }
    assert public == set(MODELS)


@given(any_model)
def test_to_dict_round_trips_through_json(model: Any) -> None:
    """from_dict(json(to_dict(m))) == m, and to_dict holds only JSON types."""
    data = model.to_dict()
    _json_only(data)
    back = type(model).from_dict(json.loads(json.dumps(data)))
    assert model == back
    assert data == back.to_dict()


@given(any_model)
def test_models_pickle(model: Any) -> None:
    """Every model survives pickling, AmountItems.extra included."""
    assert model == pickle.loads(pickle.dumps(model))


@given(st.one_of(_notes(PageNotify), _notes(OfflineNotify)))
def test_notification_from_dict_picks_the_class(note: Notification) -> None:
    """Notification.from_dict rebuilds a PageNotify or an OfflineNotify from its type."""
    back = Notification.from_dict(json.loads(json.dumps(note.to_dict())))
    assert type(note) is type(back)
    assert note == back


def test_verified_paid_notification_stays_paid_across_json() -> None:
    """A real verified notification read back from JSON is still paid (it read as unpaid)."""
    body = sign_notification(order_id="A1001", amount=1250, product_name="咖啡")
    note = verify_notification(body, verifier=Md5Signer(PUBLIC_TEST_KEY))
    back = OfflineNotify.from_dict(json.loads(json.dumps(note.to_dict())))

    assert note.paid
    assert back.paid
    assert note == back
    assert 1250 == back.amount
    assert note.pay_date == back.pay_date
    assert "+08:00" == back.pay_date.isoformat()[-6:]


def test_the_old_workaround_raises_instead_of_reading_unpaid() -> None:
    """attrs.asdict + json + the constructor gave paid == False; now the constructor refuses."""
    body = sign_notification(order_id="A1001", amount=1250)
    note = verify_notification(body, verifier=Md5Signer(PUBLIC_TEST_KEY))
    data = json.loads(json.dumps(attrs.asdict(note), default=str))

    with pytest.raises(ValidationError) as info:
        OfflineNotify(**data)

    assert "status: must be PaymentStatus, not str" in str(info.value)
    assert "sign_type" in info.value.fields
    assert "amount_items" in info.value.fields


def _note_dict() -> dict[str, Any]:
    body = sign_notification(order_id="A1001", amount=1250)
    data: dict[str, Any] = verify_notification(body, verifier=Md5Signer(PUBLIC_TEST_KEY)).to_dict()
    return data


@pytest.mark.parametrize(
    ("change", "field", "why"),
    [
        ({"amount": "1250"}, "amount", "must be an int, not str"),
        ({"amount": 12.5}, "amount", "must be an int, not float"),
        ({"amount": True}, "amount", "must be an int, not bool"),
        ({"status": "PAID"}, "status", "'PAID' is not one of 'SUCCESS', 'FAILED'"),
        ({"sign_type": None}, "sign_type", "None is not one of 'MD5', 'RSA'"),
        ({"pay_date": "2026-11-26T09:30:00"}, "pay_date", "has no UTC offset"),
        ({"pay_date": 1764120600}, "pay_date", "must be an ISO date and time string, not int"),
        ({"order_date": "20261126"}, "order_date", "'20261126' is not an ISO date (YYYY-MM-DD)"),
        ({"amount_items": {"cash": "1"}}, "amount_items.cash", "must be an int, not str"),
        ({"amount_items": {"cash": 1, "bogus": 2}}, "amount_items.bogus", "unknown key"),
        ({"amount_items": {"extra": {"X": 1.5}}}, "amount_items.extra", "'X': must be an int"),
        ({"surprise": 1}, "surprise", "unknown key for OfflineNotify"),
    ],
)
def test_from_dict_refuses_what_it_cannot_read_back(
    change: dict[str, Any], field: str, why: str
) -> None:
    """Each refusal is a DecodeError naming the field (a nested one by its path)."""
    data = _note_dict() | change

    with pytest.raises(DecodeError) as info:
        OfflineNotify.from_dict(data)

    assert field == info.value.field
    assert why in str(info.value)


def test_from_dict_names_a_missing_field() -> None:
    """A required key that is absent is named."""
    data = _note_dict()
    del data["pay_no"]

    with pytest.raises(DecodeError, match="pay_no: missing"):
        OfflineNotify.from_dict(data)


def test_from_dict_refuses_a_non_dict() -> None:
    """A list or a string is not a model."""
    with pytest.raises(DecodeError, match="must be a dict, not list"):
        PayUrl.from_dict([])  # type: ignore[arg-type]


def test_amount_items_extra_is_read_only_and_hashable() -> None:
    """extra cannot be changed after the fact, and the model can be a dict key."""
    items = AmountItems(cash=1, extra={"NEW_AMT": 5})
    with pytest.raises(TypeError):
        items.extra["NEW_AMT"] = 6  # type: ignore[index]

    assert {items: 1}[AmountItems(cash=1, extra={"NEW_AMT": 5})] == 1
    assert 6 == items.total


@pytest.mark.parametrize("extra", [[("X_AMT", 1)], 5, "X_AMT=1"], ids=["pairs", "int", "str"])
def test_amount_items_extra_must_be_a_mapping(extra: Any) -> None:
    """Only a mapping becomes the extra parts; anything else is refused, not converted."""
    with pytest.raises(ValidationError) as caught:
        AmountItems(extra=extra)

    assert ("extra",) == caught.value.fields
