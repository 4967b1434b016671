"""Windows Firewall knowledge the RPC and NetBIOS probes declare as their `firewall` hint.

The vendor's document names predefined rule groups, not ports, for RPC services (WMI, Service
Control Manager, event log, PLA, task scheduler) and for NetBIOS/SMB file sharing: the dynamic
RPC range is never opened as a port rule, the matching group is enabled instead.
"""

from __future__ import annotations

from scanner.probes.base import FirewallHint

# Each group with the words of a row's purpose, or the RPC interface names, that call for it.
RULE_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Windows Management Instrumentation (WMI)", ("windows management instrumentation", "wmi")),
    ("Remote Service Management", ("service control manager", "scm", "svcctl")),
    ("Remote Event Log Management", ("event log", "eventlog", "even6")),
    ("Performance Logs and Alerts", ("performance logs", "plasrv", "removable storage", "pla")),
    ("Remote Scheduled Tasks Management", ("scheduled tasks", "scheduled task", "task scheduler", "atsvc", "schedule",
                                           "tasksched")),
    ("File and Printer Sharing", ("file and printer sharing", "netbios", "remote registry", "winreg")),
)

# RPC with no named service: WMI is what the Auditor's RPC rows need most.
RPC_FIREWALL = FirewallHint(rule_groups=RULE_GROUPS, default_group="Windows Management Instrumentation (WMI)")
NETBIOS_FIREWALL = FirewallHint(rule_groups=RULE_GROUPS, default_group="File and Printer Sharing")
# DCOM names its server in the evidence (`server`: wmi, pla): WMI's or PLA's own group, whatever
# else the row's purpose mentions; WMI when nothing says (a 135 dropped before the activation).
DCOM_FIREWALL = FirewallHint(rule_groups=RULE_GROUPS, default_group="Windows Management Instrumentation (WMI)",
                             evidence_key="server")
# Authenticated RPC names the interfaces it asked for (`asked`: scm, eventlog, winreg, tasksched):
# Remote Registry over \PIPE\winreg is SMB (File and Printer Sharing), even on a row whose purpose
# also names the Service Control Manager. No default: an unknown interface gets a port rule.
RPC_AUTH_FIREWALL = FirewallHint(rule_groups=RULE_GROUPS, evidence_key="asked")
