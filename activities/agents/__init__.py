"""Agent activities: Manual Hunter, Alarm Triage, Watchman, Weaver, and outcome feedback."""
