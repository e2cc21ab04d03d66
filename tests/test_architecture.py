"""appserver.py keeps its shape: sections in dependency order, short functions, one table of
settings behind Config, --help and the README.

These read the module's source with ast: they check the layering the module's docstring
promises, not behaviour.
"""

import ast
import re
import unittest

import appserver
from tests.support import REPO

SOURCE = (REPO / "appserver.py").read_text(encoding="utf-8")
BANNER = re.compile(r"^# (\d+)\. ([A-Za-z0-9/ .()-]+?) #+$")
MAX_FUNCTION_LINES = 60


def sections():
    """[(first line, number, title)] of the banner sections, in file order."""
    found = []
    for number, line in enumerate(SOURCE.splitlines(), 1):
        match = BANNER.match(line)
        if match:
            found.append((number, int(match.group(1)), match.group(2)))
    return found


def section_of(line, banners):
    current = 0
    for first, number, _ in banners:
        if line >= first:
            current = number
    return current


def defined_names(node):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    names = set()
    targets = node.targets if isinstance(node, ast.Assign) else \
        [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else []
    for target in targets:
        for sub in ast.walk(target):
            if isinstance(sub, ast.Name):
                names.add(sub.id)
    return names


class Layering(unittest.TestCase):
    tree = ast.parse(SOURCE)

    def test_sections_are_numbered_in_order_and_named_in_the_docstring(self):
        banners = sections()
        self.assertEqual([number for _, number, _ in banners], list(range(1, len(banners) + 1)))
        for _, number, title in banners:
            self.assertRegex(appserver.__doc__, r"%d\. %s" % (number, re.escape(title)))

    def test_no_top_level_definition_refers_to_a_later_section(self):
        banners = sections()
        home = {}
        for node in self.tree.body:
            for name in defined_names(node):
                home.setdefault(name, section_of(node.lineno, banners))
        problems = []
        for node in self.tree.body:
            where = section_of(node.lineno, banners)
            for sub in ast.walk(node):
                if isinstance(sub, ast.Name) and home.get(sub.id, 0) > where:
                    problems.append("line %d (section %d) uses %s from section %d"
                                    % (sub.lineno, where, sub.id, home[sub.id]))
        self.assertEqual(problems, [])

    def test_no_function_is_longer_than_60_lines(self):
        long = ["%s (line %d): %d lines" % (node.name, node.lineno,
                                             node.end_lineno - node.lineno + 1)
                for node in ast.walk(self.tree)
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
        self.assertEqual(long, [])

    def test_imports_only_the_standard_library(self):
        import sys
        modules = set()
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                modules.add(node.module.split(".")[0])
        self.assertEqual(sorted(m for m in modules if m not in sys.stdlib_module_names
                                and m != "__future__"), [])


class OneTableOfSettings(unittest.TestCase):

    def test_config_fields_and_defaults_come_from_the_table(self):
        fields = {f.name: f.default for f in appserver.dataclasses.fields(appserver.Config)}
        self.assertEqual(fields, {s.field: s.default for s in appserver.SETTINGS})

    def test_every_setting_is_read_from_its_variable(self):
        # One variable per field, and config_from_env reads each one through the table.
        names = [s.name for s in appserver.SETTINGS]
        self.assertEqual(len(names), len(set(names)))
        for setting in appserver.SETTINGS:
            with self.subTest(setting=setting.name):
                with self.assertRaises(appserver.ConfigError) as caught:
                    appserver.config_from_env({setting.name: "\x01 bad"})
                self.assertEqual(caught.exception.variable, setting.name)

    def test_readme_configuration_table_is_the_table(self):
        readme = (REPO / "README.md").read_text(encoding="utf-8")
        self.assertTrue(appserver.settings_table_markdown() in readme,
                        "regenerate the README table with: python3 -c 'import appserver; "
                        "print(appserver.settings_table_markdown())'")

    def test_help_lists_each_setting_with_its_default(self):
        text = appserver.help_text()
        for setting in appserver.SETTINGS:
            self.assertIn(setting.name, text)
            self.assertIn("%s (default: %s)" % (setting.help, setting.shown_default), text)


if __name__ == "__main__":
    unittest.main()
