"""Messages, workers, control node, accumulators, schedules, backends. Knows no chemistry."""
