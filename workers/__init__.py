"""Everything that computes: runners, the numpy layer library, metrics and the job function."""
