"""Destinations: the project's feed carried onward to webhooks, Parcelvoy, another Pier and
Segment-format APIs (docs/destinations.md). `engine` delivers, `kinds` says what each kind sends,
`manage` checks and applies the administrators' commands, `secrets` seals keys and signs."""
