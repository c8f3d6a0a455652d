"""Supervised job processes: a crash, memory or time overrun ends the job's process only."""
