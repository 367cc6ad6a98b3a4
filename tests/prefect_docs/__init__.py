"""Scripts doing what Prefect 3's documentation examples do, in Prefect's import style.

tests/test_prefect_docs.py rewrites their import lines to daskflow and runs each
``ex_*`` function; every one holds its own flows and tasks and asserts what the
documentation says the example shows.
"""
