"""Data input: reading historian exports, parsing times, sensor tables, resampling, windows."""
