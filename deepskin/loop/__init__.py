"""The learning loop: a report becomes a label (feedback), the ledger decides when to train (ledger), a job is
launched (launchers) and reads the labels it can trust (labels), the gate's decision acts on the registry
(promotion), the sweep keeps it from jamming (sweeper), and an operator sees it all (ops). May import
deepskin.services and deepskin.core, never deepskin.clients; deepskin.services never imports it."""
