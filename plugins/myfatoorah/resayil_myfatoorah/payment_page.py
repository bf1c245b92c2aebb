"""The simulator's hosted payment page: plain HTML, one form with Pay and Decline buttons, no JavaScript."""

from __future__ import annotations

from html import escape

from .money import fils_to_kwd_text
from .sandbox import SimInvoice

_STYLE = """
body{font-family:system-ui,sans-serif;background:#f4f6f8;margin:0;padding:2rem;color:#1d2733}
main{max-width:28rem;margin:auto;background:#fff;border-radius:12px;padding:1.5rem 2rem;box-shadow:0 2px 12px #0002}
.sandbox{background:#fff4d6;border:1px solid #e7c160;border-radius:6px;padding:.4rem .7rem;font-size:.85rem}
.amount{font-size:2rem;font-weight:700;margin:.5rem 0}
dl{display:grid;grid-template-columns:auto 1fr;gap:.3rem 1rem}dt{color:#5b6775}dd{margin:0}
.buttons{display:flex;gap:1rem;margin-top:1.5rem}
button{flex:1;font-size:1.1rem;padding:.8rem;border-radius:8px;border:0;cursor:pointer}
.pay{background:#1b7f3b;color:#fff}.decline{background:#b3261e;color:#fff}
"""


def render_payment_page(invoice: SimInvoice, action_url: str, notice: str = "") -> str:
    """The checkout page for ``invoice``; the form posts ``action=pay|decline`` to ``action_url``."""
    arabic = invoice.language.upper() == "AR"
    amount = f"{fils_to_kwd_text(invoice.value_fils)} {escape(invoice.currency)}"
    if invoice.status == "Pending":
        form = f"""
  <form method="post" action="{escape(action_url)}" class="buttons">
    <button type="submit" name="action" value="pay" class="pay">{"ادفع" if arabic else "Pay"} {amount}</button>
    <button type="submit" name="action" value="decline" class="decline">{"رفض" if arabic else "Decline"}</button>
  </form>"""
    else:
        form = f"<p><strong>This invoice is {escape(invoice.status.lower())}.</strong></p>"
    rows = [
        ("Invoice", str(invoice.id)),
        ("Reference", invoice.customer_reference),
        ("Item", invoice.item_name),
        ("Customer", invoice.customer_name),
        ("Method", invoice.method.name_en),
    ]
    details = "".join(f"<dt>{escape(name)}</dt><dd>{escape(value)}</dd>" for name, value in rows if value)
    return f"""<!doctype html>
<html lang="{"ar" if arabic else "en"}" dir="{"rtl" if arabic else "ltr"}">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>MyFatoorah sandbox: invoice {invoice.id}</title><style>{_STYLE}</style></head>
<body><main>
  <p class="sandbox">MyFatoorah sandbox simulator: no real money moves.</p>
  {f"<p>{escape(notice)}</p>" if notice else ""}
  <p class="amount">{amount}</p>
  <dl>{details}</dl>{form}
</main></body></html>
"""
