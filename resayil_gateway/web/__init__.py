"""Browser-facing machinery shared by the portal and payment pages: sessions, CSRF, and the billing pages."""
