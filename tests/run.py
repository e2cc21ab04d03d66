"""The whole test suite, with one closing line that names every test that did not run.

    python -m tests.run [-v] [-k PATTERN] [TEST ...]     (from the repository's root)
    python -m tests.run --requirements EXTRA             (print pyproject's extra, one a line)

Discovers tests/test*.py (top-level directory: the repository) unless TEST names are given,
and runs them with unittest's text runner, whose closing lines ("Ran N tests", "OK"/"FAILED")
stay as they are. After them, on the same stream (stderr), comes one line, "skipped: 0" or
"skipped N: test (reason); ...". A class or module whose setup skipped counts as its tests,
named by the class or module. Under CI=true (which installs every tool) a skip is a failure:
the run says FAILED and exits 1. A run where no test starts or ends for --stall seconds (300)
is ended with every thread's traceback, so a hang cannot eat CI's time limit.
"""

import argparse
import faulthandler
import os
import pathlib
import re
import sys
import unittest

REPO = pathlib.Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() == "true"
SETUP_SKIP = re.compile(r"^(setUpClass|setUpModule) \((?P<where>[\w.]+)\)$")


def requirements(extra):
    """The requirement strings of [project.optional-dependencies] ``extra`` in pyproject.toml."""
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    try:
        import tomllib  # novermin (3.11+; 3.10 takes the fallback below)
    except ImportError:   # Python 3.10: the one-line list form that pyproject.toml uses
        match = re.search(r"^\[project\.optional-dependencies\]$(?:\n(?!\[).*)*?"
                          r"\n%s\s*=\s*\[([^\]\n]*)\]" % re.escape(extra), text, re.M)
        if not match:
            raise SystemExit("pyproject.toml: no one-line optional dependency %r" % extra)
        return re.findall(r'"([^"]+)"', match.group(1))
    return tomllib.loads(text)["project"]["optional-dependencies"][extra]


def test_ids(suite):
    """The ids of every test in ``suite`` (read before running: a run empties the suite)."""
    if isinstance(suite, unittest.TestSuite):
        return [name for test in suite for name in test_ids(test)]
    return [suite.id()]


class Result(unittest.TextTestResult):
    """A skip fails the run under CI=true (TextTestRunner then prints FAILED).

    A watchdog ends a run that hangs: when no test starts or ends for ``stall`` seconds
    (a class's setUpClass included), it prints every thread's traceback and exits 1."""

    stall = 0

    def _rearm(self):
        if self.stall:
            faulthandler.dump_traceback_later(self.stall, exit=True)

    def startTestRun(self):
        super().startTestRun()
        self._rearm()

    def startTest(self, test):
        self._rearm()
        super().startTest(test)

    def stopTest(self, test):
        super().stopTest(test)
        self._rearm()

    def stopTestRun(self):
        faulthandler.cancel_dump_traceback_later()
        super().stopTestRun()

    def wasSuccessful(self):
        return super().wasSuccessful() and not (IN_CI and self.skipped)


def skip_line(result, ids):
    """One line naming every test that did not run, and why; ``ids``: the tests loaded."""
    if not result.skipped:
        return "skipped: 0"
    names, total = [], 0
    for test, reason in result.skipped:
        setup = SETUP_SKIP.match(str(test))
        if setup:   # a class or module setup skipped: its tests never started
            count = sum(name.startswith(setup.group("where") + ".") for name in ids)
            total += count
            names.append("%s (%d tests; %s)" % (setup.group("where"), count, reason))
        else:
            total += 1
            names.append("%s (%s)" % (test.id(), reason))
    head = "skipped %d" % total
    if IN_CI:
        head += ", not allowed under CI=true"
    return "%s: %s" % (head, "; ".join(names))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tests.run", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_const", const=2, default=1,
                        dest="verbosity", help="one line per test")
    parser.add_argument("-k", action="append", dest="patterns", metavar="PATTERN",
                        help="only tests whose name matches (as unittest -k); may repeat")
    parser.add_argument("--stall", type=float, default=300.0, metavar="SECONDS",
                        help="end the run (with every thread's traceback, exit 1) when no test "
                             "starts or ends for this long; 0: never (default 300)")
    parser.add_argument("--requirements", metavar="EXTRA",
                        help="print pyproject.toml's optional dependency EXTRA and exit")
    parser.add_argument("tests", nargs="*", metavar="TEST",
                        help="dotted test names (default: discover tests/test*.py)")
    args = parser.parse_args(argv)
    if args.requirements:
        print("\n".join(requirements(args.requirements)))
        return 0

    os.chdir(REPO)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    loader = unittest.TestLoader()
    if args.patterns:
        loader.testNamePatterns = ["*%s*" % p if "*" not in p else p for p in args.patterns]
    if args.tests:
        suite = loader.loadTestsFromNames(args.tests)
    else:
        suite = loader.discover("tests", top_level_dir=".")
    ids = test_ids(suite)
    Result.stall = args.stall
    runner = unittest.TextTestRunner(verbosity=args.verbosity, resultclass=Result)
    result = runner.run(suite)
    runner.stream.writeln(skip_line(result, ids))   # after unittest's lines, on its stream
    runner.stream.flush()
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
