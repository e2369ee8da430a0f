"""The engine's core: records, the task contract, the sample store, scoring and the eval loop."""
