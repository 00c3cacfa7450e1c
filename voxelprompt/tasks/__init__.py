"""The task catalogue T: task families with their ground-truth programs, and prompt synthesis (paper §4)."""
