"""The evaluation protocol: held-out data, scoring, baselines, paraphrases, statistics and the summary."""
