"""opencode-watchdog: finds OpenCode prompts that never get a reply."""

__version__ = "0.1.0"
