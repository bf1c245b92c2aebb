"""resayil-hello: an example third-party plugin for Resayil Gateway (see ``resayil_hello.plugin``)."""
