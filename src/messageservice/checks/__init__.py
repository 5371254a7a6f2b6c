"""check-provider: a conformance battery for Bitrix24 SMS provider apps, played on a portal under our control.

report = check_provider("http://127.0.0.1:9100/", Options(report_timeout=10))
for result in report.results: print(result.name, result.outcome)
"""

from messageservice.checks.battery import Options, check_provider, unknown_names
from messageservice.checks.portal import CheckPortal, throwaway_settings
from messageservice.checks.results import CheckResult, Outcome, Report
from messageservice.checks.rules import CHECKS, NAMES, Check

__all__ = [
    "CHECKS",
    "NAMES",
    "Check",
    "CheckPortal",
    "CheckResult",
    "Options",
    "Outcome",
    "Report",
    "check_provider",
    "throwaway_settings",
    "unknown_names",
]
