"""portready: prove that the network lets a Netwrix Auditor server reach what it audits."""

__version__ = "0.1.0"
