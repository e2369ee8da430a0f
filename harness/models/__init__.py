"""Model backends: Hugging Face and vLLM generation, shared-prefix sampling, checkpoint references."""
