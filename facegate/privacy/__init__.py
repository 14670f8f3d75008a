"""Privacy operations on students' personal data: the audit log, forgetting a student, retention.

Every store of personal data and how long it stays there is listed in the README ("Personal
data: what is stored, where, for how long").  The modules here are the ways to act on them:
``audit`` (the append-only log of who enrolled, removed or forgot whom), ``forget`` (remove one
student everywhere) and ``retention`` (delete samples and frames past their retention period).
"""
