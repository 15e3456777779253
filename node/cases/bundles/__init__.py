"""Bundles (一件事) at the lead department's node, and their view at any counter.

A bundle arrives at the lead as an ordinary application of the bundle's service (from its
own counter or another member's), checked and stored by the owner like any other. Its
handler "bundle" starts a run here: one part per component. A runner submits each part,
as soon as every part it waits for is completed, as an ordinary application from this node
through ``Origin.submit`` (the same admission, policy and outbox as a clerk's), with an
idempotency key of bundle, component and attempt: a part is made once, however often the
runner is retried or the node restarted. Results of completed parts fill later parts' forms
through the bundle's mappings.

The lead tells the counter how the whole goes with the bundle application's own status
changes: ``in_review`` while parts run, ``needs_materials`` naming the parts that failed and
why, ``completed`` when every part is. Each change carries, in ``results``, the parts'
snapshot (status, owner, deadline, attempt) under ``yrd.components`` and the parts' result
values as ``<component>.<result>``. A clerk corrects a failed part with a resubmission: an
application of the bundle service with purpose ``bundle-resubmit`` whose sealed form names
the bundle, the part and the attempt; the lead checks it with the part's own admission and
starts only that part again (and, once it completes, what waits for it).

The package, by concern (node/cases/bundles/):

- ``state.py``: the shared base, a run's state as read from the database;
- ``starting.py``: a bundle arriving at the lead, and the bounded wait for catalogues;
- ``routing.py``: parts submitted through ``Origin.submit``, their status changes and
  receipts taken in, results mapped into later parts' forms;
- ``status.py``: the parts' snapshot the lead reports and the counter reads;
- ``resubmission.py``: a failed part's correction, sent by the counter, taken in by the lead;
- ``runner.py``: the lead's runner loop, and ``Bundles``, which joins the above for the
  composition root.
"""
