"""Statistics over stored scores: confidence intervals, paired differences, corrections, rank intervals, power (ci, board), test-time selection."""
