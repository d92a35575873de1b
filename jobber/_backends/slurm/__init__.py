"""The Slurm backend: ``sbatch`` starts a job, Slurm confines it, jobber watches it.

``backend.py`` submits, stops and maps states; ``array.py`` submits a sweep as one job
array; ``query.py`` reads what Slurm answers.
"""
