"""Safety scanners for prompts and completions: PII/secrets, prompt injection, toxic language.

Pure functions, no Kafka: a stream agent calls ``scan`` (``streams.safety.scanner``) on every
event and gets ``SafetyFinding`` records (span offsets, never raw values), the text to store
(redacted when the tenant's policy says so) and whether to block.
"""
