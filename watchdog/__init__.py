"""opencode-watchdog: finds OpenCode prompts that never get a reply."""

__version__ = "0.1.0"
# Every request (stream, REST, probes, webhook, Alertmanager) names us, so logs can tell.
USER_AGENT = f"opencode-watchdog/{__version__}"
