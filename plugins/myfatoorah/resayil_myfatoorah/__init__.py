"""Resayil Gateway plugin for MyFatoorah payments (Kuwait, KWD), API v2.

- :mod:`resayil_myfatoorah.settings`: the ``[myfatoorah]`` settings section.
- :mod:`resayil_myfatoorah.money`: KWD ↔ integer fils, exactly, and JSON that keeps amounts exact.
- :mod:`resayil_myfatoorah.client`: one API call with the envelope unwrapped and every error shape mapped.
- :mod:`resayil_myfatoorah.invoice`: the ``ExecutePayment`` body for a checkout.
- :mod:`resayil_myfatoorah.status`: ``GetPaymentStatus`` → paid / pending / failed.
- :mod:`resayil_myfatoorah.signature` and :mod:`resayil_myfatoorah.webhooks`: signed webhooks, V2 and V1.
- :mod:`resayil_myfatoorah.provider`: :class:`MyFatoorahProvider`, the payment provider the gateway uses.
- :mod:`resayil_myfatoorah.simulator`: a MyFatoorah sandbox look-alike for tests and the demo.
- :mod:`resayil_myfatoorah.plugin`: the hook implementations registered under the ``resayil_gateway`` entry point.
"""

from .provider import MyFatoorahProvider, PaymentMethod
from .settings import MyFatoorahSettings

__all__ = ["MyFatoorahProvider", "MyFatoorahSettings", "PaymentMethod"]
