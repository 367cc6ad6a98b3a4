"""What a user writes (flows, tasks, futures) and what a run is (states, records)."""
