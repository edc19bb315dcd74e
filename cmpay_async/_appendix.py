"""The interface document's appendix tables: bank codes (9.1) and return codes (9.2)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

import attrs

__all__ = [
    "BANK_CODES",
    "RETURN_CODES",
    "RETURN_CODE_PATTERN",
    "SUCCESS_CODES",
    "ReturnCode",
    "explain_return_code",
]

#: Appendix 9.1, code -> bank name. The document lists SHRCB, CBHB and HSB twice; merged here.
BANK_CODES: Mapping[str, str] = MappingProxyType(
    {
        "ICBC": "工商银行",
        "CMB": "招商银行",
        "CCB": "建设银行",
        "ABC": "农业银行",
        "BOC": "中国银行",
        "SPDB": "上海浦东发展银行",
        "BCOM": "交通银行",
        "CMBC": "民生银行",
        "CEBB": "光大银行",
        "GDB": "广东发展银行",
        "ECITIC": "中信银行",
        "HXB": "华夏银行",
        "CIB": "兴业银行",
        "PSBC": "邮政储蓄银行",
        "SDB": "深圳发展银行",
        "BBGB": "广西北部湾银行",
        "BEA": "东亚银行",
        "CBHB": "渤海银行",
        "CDRCB": "成都农村商业银行",
        "CQRCB": "重庆农村商业银行",
        "DGB": "东莞银行",
        "DLB": "大连银行",
        "DYCCB": "东营市商业银行",
        "FDB": "富滇银行",
        "GZB": "广州银行",
        "HBB": "河北银行",
        "HKB": "汉口银行",
        "HZB": "杭州银行",
        "LTCCB": "浙江泰隆商业银行",
        "HSB": "徽商银行",
        "BJRCB": "北京农商银行",
        "HUNRCU": "湖南农村信用社",
        "JJB": "九江银行",
        "JSB": "江苏银行",
        "NBB": "宁波银行",
        "NXB": "宁夏银行",
        "QLB": "齐鲁银行",
        "QSB": "齐商银行",
        "RZB": "日照银行",
        "SCB": "渣打银行",
        "SDRCB": "顺德农村商业银行",
        "SHRCB": "上海农村商业银行",
        "SJB": "盛京银行",
        "SPABANK": "平安银行",
        "SRB": "上饶银行",
        "SZB": "苏州银行",
        "SZRCB": "深圳农村商业银行",
        "TACCB": "泰安市商业银行",
        "WHCCB": "威海市商业银行",
        "WLMQCCB": "乌鲁木齐市商业银行",
        "WZB": "温州银行",
        "XMB": "厦门银行",
        "YCCCB": "宜昌市商业银行",
        "ZHRCU": "珠海市农村信用合作社",
        "ZJCCB": "浙商银行",
        "ZJGRCB": "张家港农商银行",
        "NCB": "南洋商业银行",
        "NJCB": "南京银行",
        "BOB": "北京银行",
    }
)


@attrs.frozen
class ReturnCode:
    """One row of appendix 9.2: the code, the document's text and an English explanation."""

    code: str
    chinese: str
    english: str
    hint: str | None = None


_ROWS = (
    ReturnCode("000000", "交易成功", "success"),
    ReturnCode("MCG00000", "交易成功", "success"),
    ReturnCode("MCG01088", "退货金额域非法", "refund amount is invalid"),
    ReturnCode("MCG01081", "产品名称域越界", "productName is too long"),
    ReturnCode("MCG01033", "产品名称域为空", "productName is empty"),
    ReturnCode("MCG01030", "有效期单位域不合法", "periodUnit is invalid"),
    ReturnCode("MCG01028", "有效期数量域为 0", "period is 0"),
    ReturnCode("MCG01027", "有效期数量域为空", "period is empty"),
    ReturnCode("MCG01025", "订单日期域不合法", "orderDate is invalid"),
    ReturnCode("MCG01024", "订单日期域为空", "orderDate is empty"),
    ReturnCode("MCG01019", "币种域取值不合法", "currency is invalid"),
    ReturnCode("MCG01018", "币种域为空", "currency is empty"),
    ReturnCode("MCG01014", "订单金额域为空", "amount is empty"),
    ReturnCode("RPM99981", "订单已过期", "the order has expired"),
    ReturnCode("RPM23190", "退款日期超过最大有效期", "the refund is past the latest refund date"),
    ReturnCode("RPM22407", "退款金额大于可退款金额", "refund amount exceeds the refundable amount"),
    ReturnCode("RPM22401", "退货金额大于可退货金额", "return amount exceeds the returnable amount"),
    # The document lists RPM22208 twice with two texts; both are kept in one row.
    ReturnCode(
        "RPM22208",
        "订单状态异常,详询 cmpay 网站;除了订单号重复外, request ID 也不能重复",
        "abnormal order state: the orderId or the requestId was used before",
        "every request needs a new requestId, and every order a new orderId",
    ),
    ReturnCode("RPM22201", "订单不存在", "the order does not exist"),
    ReturnCode(
        "RPM22224",
        "账户支付方式不正确,请联 CMPAY 网站,没开权限网银网关,检查 type 值及 bankAbbr",
        "payment method not allowed for this merchant; check type and bankAbbr",
    ),
    ReturnCode(
        "RPM77040", "商户没有开通此类交易的权限", "the merchant may not use this transaction type"
    ),
    ReturnCode(
        "E22160",
        "该银行充值业务未开通,一般是银行代码写错导致",
        "bank top-up not enabled; usually a wrong bankAbbr",
    ),
    ReturnCode(
        "IPS0008",
        "签名不符,一般都是由于中文编码引起",
        "signature mismatch",
        "check the signKey first (the one for this merchantId, without a trailing newline or "
        "spaces), then the encoding: the hmac is computed over the UTF-8 source whatever "
        "characterSet says, and the body must be encoded in the charset characterSet names; "
        "`cmpay sign` prints the exact source and `cmpay verify` tries each encoding",
    ),
    ReturnCode(
        "IPS0001",
        "一般都是因为商户编号或者密钥不对引起的",
        "unknown merchant or wrong key",
        "check merchantId and the signKey (or RSA key) configured for that merchant, "
        "and that production and test credentials are not mixed",
    ),
)

#: Appendix 9.2, code -> row.
RETURN_CODES: Mapping[str, ReturnCode] = MappingProxyType({r.code: r for r in _ROWS})


def _shapes(codes: Iterable[str]) -> str:
    """A regular expression of the codes' forms: each code's letters, then as many digits."""
    shapes = set()
    for code in codes:
        letters = code.rstrip("0123456789")
        shapes.add(f"{letters}[0-9]{{{len(code) - len(letters)}}}")
    return "|".join(sorted(shapes))


#: The forms of appendix 9.2's codes (6 digits; MCG, RPM or E and 5 digits; IPS and 4): a
#: received returnCode must have one of them. No form is a proper prefix or suffix of another,
#: which fixes both ends of the field in a signed string (docs/guarantees.md).
RETURN_CODE_PATTERN = _shapes(RETURN_CODES)

#: The return codes that mean success.
SUCCESS_CODES = frozenset({"000000", "MCG00000"})


#: Hints that depend on which request got the code: the appendix's text fits one of them.
CONTEXT_HINTS: dict[tuple[str, str], str] = {
    (
        "OrderRefund",
        "RPM22208",
    ): "the order is not in a state that can be refunded: it is not paid (query it; a refund "
    "needs OrderState.PAID), or this refund's requestId was used before",
}


def explain_return_code(code: str) -> ReturnCode:
    """Return the appendix row for ``code``, or a generic row for a code the document lacks."""
    row = RETURN_CODES.get(code)
    if row is None:
        return ReturnCode(code, "", "return code not listed in the interface document")
    return row
