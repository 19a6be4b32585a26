"""CodeIO: records from the reasoning-gym wheel turned into graded call tasks by running the reference in the judge's sandbox."""
