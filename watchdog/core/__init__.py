"""The pure core: typed events in, the prompt state machine, transitions out; no I/O."""
