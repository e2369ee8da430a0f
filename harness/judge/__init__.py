"""A VLM judge over stored answers: pointwise scores and pairwise comparisons."""
