"""The simulator's hosted payment page: plain HTML, one form with Pay and Decline buttons, no JavaScript."""

from __future__ import annotations

from html import escape

from .money import fils_to_kwd_text
from .sandbox import SimInvoice

_STYLE = """
body{font-family:system-ui,sans-serif;background:#f4f6f8;margin:0;padding:2rem 1rem;color:#1d2733}
main{max-width:28rem;margin:auto;background:#fff;border-radius:12px;padding:1.5rem;box-shadow:0 2px 12px #0002}
.sandbox{background:#fff4d6;border:1px solid #e7c160;border-radius:6px;padding:.4rem .7rem;font-size:.85rem}
.amount{font-size:2rem;font-weight:700;margin:.5rem 0}
dl{display:grid;grid-template-columns:auto minmax(0,1fr);gap:.3rem 1rem}dt{color:#5b6775}
dd{margin:0;overflow-wrap:anywhere}
.buttons{display:flex;gap:1rem;margin-top:1.5rem}
button{flex:1;font-size:1.1rem;padding:.8rem;border-radius:8px;border:0;cursor:pointer}
.pay{flex:2;background:#1b7f3b;color:#fff}.decline{background:#b3261e;color:#fff}
"""


_WORDS = {
    "en": ("Pay", "Decline", "Invoice", "Reference", "Item", "Customer", "Method", "This invoice is {status}."),
    "ar": ("ادفع", "رفض", "الفاتورة", "المرجع", "البند", "العميل", "طريقة الدفع", "حالة هذه الفاتورة: {status}."),
}
_NOTICE = {
    "en": "MyFatoorah sandbox simulator: no real money moves.",
    "ar": "محاكي بيئة اختبار MyFatoorah: لا تنتقل أي أموال حقيقية.",
}


def render_payment_page(invoice: SimInvoice, action_url: str, notice: str = "") -> str:
    """The checkout page for ``invoice`` (in Arabic when it was created with ``Language=AR``); the form posts
    ``action=pay|decline`` to ``action_url``."""
    arabic = invoice.language.upper() == "AR"
    pay, decline, *labels, closed = _WORDS["ar" if arabic else "en"]
    amount = f"{fils_to_kwd_text(invoice.value_fils)} {escape(invoice.currency)}"
    if invoice.status == "Pending":
        form = f"""
  <form method="post" action="{escape(action_url)}" class="buttons">
    <button type="submit" name="action" value="pay" class="pay">{pay} <bdi>{amount}</bdi></button>
    <button type="submit" name="action" value="decline" class="decline">{decline}</button>
  </form>"""
    else:
        form = f"<p><strong>{escape(closed.format(status=invoice.status.lower()))}</strong></p>"
    values = [
        str(invoice.id),
        invoice.customer_reference,
        invoice.item_name,
        invoice.customer_name,
        invoice.method.name_ar if arabic else invoice.method.name_en,
    ]
    rows = list(zip(labels, values, strict=True))
    details = "".join(f"<dt>{escape(name)}</dt><dd>{escape(value)}</dd>" for name, value in rows if value)
    return f"""<!doctype html>
<html lang="{"ar" if arabic else "en"}" dir="{"rtl" if arabic else "ltr"}">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>MyFatoorah sandbox: invoice {invoice.id}</title><style>{_STYLE}</style></head>
<body><main>
  <p class="sandbox">{_NOTICE["ar" if arabic else "en"]}</p>
  {f"<p>{escape(notice)}</p>" if notice else ""}
  <p class="amount"><bdi>{amount}</bdi></p>
  <dl>{details}</dl>{form}
</main></body></html>
"""
