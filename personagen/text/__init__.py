"""Text utilities of the pipeline: PII redaction, token budgets and windows, near-duplicates."""
