"""Data sharing between members (docs/sharing.md): the holder's answers, requests and grants
(``holder.py``), the asker's merged queries and requests (``asker.py``), the checks both ends
run (``checks.py``) and the operator's records, disclosure log and meter (``records.py``)."""
