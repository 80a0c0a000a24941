"""taskgate's benchmark harness (`make bench`)."""
