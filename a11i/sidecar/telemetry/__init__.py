"""What a call leaves behind: ``conventions`` (every telemetry name, defined once),
``attributes`` (a call record to span attributes and log records, pure), ``traces`` (spans and
logs over OTLP, the scrubbing log filter), ``metrics`` (Prometheus and OTLP instruments) and
``events`` (the event ring and the Redis stream ``a11i:events``).

What the package may not do: fail or delay the traffic it observes, or export a string that did
not pass the PII scrubber.
"""
