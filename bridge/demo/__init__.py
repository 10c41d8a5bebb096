"""`sagabridge demo`: a live choreography on the embedded broker, tracked by sagabridge.

Four small services (orders, inventory, payment, shipping) react to each other's events on Kafka
(and SQS, on moto's server) and to sagabridge's commands; knobs make them lose, delay or decline
events so the value shows. Nothing here is imported by the rest of sagabridge.

- `knobs`: the command's options as one value, and the shortened demo timings.
- `flowfile`: the example flow, rewritten for the demo (deadlines, mode, payments bus).
- `faults`: which event of which order is lost, slow or declined (seeded), and the ledger of it.
- `services`: the four services; `buses`: the Kafka and SQS clients they share.
- `processes`: the broker, moto's server and `sagabridge run`, each in its own process group.
- `tracker`: the lifecycle topic and the HTTP API, read back into counts for the view.
- `view`: the live terminal view, the plain progress line and the closing summary.
- `runner`: starts, watches and stops everything; `command`: the click command.
"""
