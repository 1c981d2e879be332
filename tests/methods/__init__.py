"""The CAM methods' tests (a package, as tests/web is)."""
