"""The core's own hook implementations, registered like any plugin and marked ``trylast`` so installed
plugins win."""
