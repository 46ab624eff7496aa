"""Detection: scores per row, thresholds, tail probabilities, alarms, operating modes, drift."""
