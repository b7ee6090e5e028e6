"""OpenCode's wire formats: the one place that knows its JSON (1.x now; 2.x as a sibling)."""
