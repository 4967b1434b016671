"""The portready lab: real peers in network namespaces (see tests/lab/README.md).

Modules: ``netns`` (Lab, Host), ``firewall`` (Firewall), ``samba_dc`` (SambaDC,
provision_template), ``tls`` (make_certs, TlsPeer), ``hostile`` (hostile_server),
``simulators`` (servers Debian lacks). ``python -m tests.lab up|status|down`` by hand.
"""
