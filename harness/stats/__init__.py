"""Statistics over stored scores: confidence intervals, paired differences, rank bands, test-time selection."""
