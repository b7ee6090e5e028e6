"""The service and its commands: configuration, the daemon that wires the layers, the CLI, the demo."""
