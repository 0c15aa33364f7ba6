"""`giving demo`: the whole system on the embedded default, driven end to end against a local provider server.

provider.py  a small HTTP server that answers like a payment provider's API (also used by the tests)
world.py     the stateful fake Stripe and GoCardless the SDKs talk to during the demo
scenario.py  the donors, what happens to their money, and the ledger that must result
run.py       the run: settings, database, web server, forms, signed deliveries, receipts, claim, payouts, report
"""
