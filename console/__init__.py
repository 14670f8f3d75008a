"""The proctor console: live verdicts per gate, proctors' decisions, and the feedback loop."""
