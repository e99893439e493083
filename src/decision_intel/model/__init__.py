"""Pure rules: classification, batching, windows, alert rules, diagnosis, reports. No I/O."""
