"""Pure logic: models, events, reducer, log ring, filter queries, alert rules, backoff. No I/O."""
