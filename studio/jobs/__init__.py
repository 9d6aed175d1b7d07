"""The queue and its workers: submitting and charging jobs (`submit`), the lease state machine (`leases`),
the worker, rendering a job, worker heartbeats, history, retention and the queries pages make."""
