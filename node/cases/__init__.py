"""Case handling: submission at the origin, acceptance and decision at the owner, handlers,
webhooks, deadlines, statuses and the policy gate."""
