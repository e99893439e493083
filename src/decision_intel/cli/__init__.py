"""The `p35` command line: one module per view, rendering included."""
