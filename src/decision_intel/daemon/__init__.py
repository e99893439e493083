"""The running service: lifecycle, consumer loop, periodic jobs, metrics, logs."""
