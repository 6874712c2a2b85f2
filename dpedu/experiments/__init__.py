"""Experiment drivers: each module has a ``main()`` that runs one experiment and writes a JSON record
(with :func:`dpedu.provenance.record`) under ``dpedu/results/`` (shipped as package data); run them as ``python -m dpedu.experiments.<name>``.
"""
