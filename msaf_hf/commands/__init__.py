"""The ``msaf-hf`` command line: one module a subcommand, each with ``main(argv=None)``.

``scripts/*.py`` are thin wrappers over these modules; ``msaf-hf <subcommand>`` and ``python -m msaf_hf
<subcommand>`` run the same code.
"""
