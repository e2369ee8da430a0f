"""Bridges to other evaluation tools: lmms-eval (engine and task export) and VLMEvalKit (result files).

Every module here imports its tool lazily, inside functions: the harness runs without them.
"""
