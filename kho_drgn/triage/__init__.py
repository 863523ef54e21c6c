"""kho-triage: run kho-drgn over many dumps and report across a fleet.

``discover`` finds dumps and vmlinux files, ``worker`` analyses one dump in
its own process, ``batch`` runs workers in parallel with a time limit each,
``fleet`` groups the records, ``cli`` is the ``kho-triage`` console script.
"""
