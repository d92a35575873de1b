"""Jobs as they live on disk: ``Job`` (the public face), the store of one identity's
jobs, the job directory's files, the log readers and the job states.

Nothing here knows where a job runs: each ``Job`` holds a backend (``jobber._backends``)
and delegates its verbs to it.
"""
