"""How to speak each protocol: builders and bounded parsers of the messages on the wire.

The probes in `scanner/probes/` decide what an answer means; these modules only say how
to ask and how to read, so a reader finds "how to speak X" here and "what X's answer
means" in the probe. Every parser meets hostile input in tests (tests/probes/test_fuzz_parsers.py).
"""
