"""A check's outcome and the battery's report, with its JSON and JUnit forms."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class Outcome(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NOT_APPLICABLE = "n/a"


@dataclass(frozen=True)
class CheckResult:
    name: str  # stable: what --only/--skip take
    title: str
    outcome: Outcome
    rule: str  # the rule the check holds the provider to
    source: str  # where the rule comes from: a Bitrix24 docs URL or a section of our spec
    expected: str = ""  # on a failure: what the protocol wants
    happened: str = ""  # on a failure: what the provider did; on n/a: why the check could not run
    fix: str = ""  # on a failure: the fix, in one sentence
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.outcome is Outcome.FAIL


@dataclass
class Report:
    provider_url: str
    portal_url: str
    results: list[CheckResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.failed]

    @property
    def ok(self) -> bool:
        return not self.failures

    def result(self, name: str) -> CheckResult:
        for result in self.results:
            if result.name == name:
                return result
        raise KeyError(name)

    def counts(self) -> dict[str, int]:
        return {outcome.value: sum(r.outcome is outcome for r in self.results) for outcome in Outcome}

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider_url": self.provider_url,
            "portal_url": self.portal_url,
            "ok": self.ok,
            "counts": self.counts(),
            "seconds": round(self.seconds, 3),
            "checks": [{**asdict(r), "outcome": r.outcome.value, "seconds": round(r.seconds, 3)} for r in self.results],
        }

    def to_junit(self) -> str:
        """JUnit XML, one testcase a check: what CI systems show as a test report."""
        counts = self.counts()
        suite = ET.Element(
            "testsuite",
            name="messageservice check-provider",
            tests=str(len(self.results)),
            failures=str(counts[Outcome.FAIL.value]),
            skipped=str(counts[Outcome.NOT_APPLICABLE.value]),
            errors="0",
            time=f"{self.seconds:.3f}",
        )
        ET.SubElement(ET.SubElement(suite, "properties"), "property", name="provider_url", value=self.provider_url)
        for r in self.results:
            case = ET.SubElement(suite, "testcase", classname="check_provider", name=r.name, time=f"{r.seconds:.3f}")
            if r.outcome is Outcome.FAIL:
                failure = ET.SubElement(case, "failure", message=r.happened[:500])
                lines = [f"Expected: {r.expected}", f"Happened: {r.happened}", f"Fix: {r.fix}"]
                lines.append(f"Rule: {r.rule} ({r.source})")
                failure.text = "\n".join(lines)
            elif r.outcome is Outcome.NOT_APPLICABLE:
                ET.SubElement(case, "skipped", message=r.happened[:500])
            else:
                ET.SubElement(case, "system-out").text = f"{r.rule} ({r.source})"
        return ET.tostring(ET.ElementTree(suite).getroot(), encoding="unicode", xml_declaration=True)
