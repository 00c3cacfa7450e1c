"""The study: its inputs (the demo, a BIDS dataset or a table), cohort, prompts, BIDS paths and
derivatives, image checks, the answer job, the tables and the QC page; and a lab's labelled scans,
which training and the evaluation read."""
