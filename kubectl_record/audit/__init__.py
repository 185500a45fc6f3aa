"""Server audit correlation (issue 5): import API server audit logs and join them to records.

formats   — every accepted input shape → one normalized event tuple (Ev)
importer  — files, rotated sets, .gz, directories, stdin, --follow with saved positions, webhook
expect    — what API calls each kubectl command sends (from kubectl_args.parse)
correlate — skew estimation, candidate windows, assignment, statuses
identity  — SelfSubjectReview per context and credential, cached
views     — short outcome text for history/show
cli       — `kubectl record audit import|unmatched|policy`
"""
