"""Every command the documentation shows names a module that exists and flags it defines.

The READMEs, docs/*.md and the entry modules' docstrings show about 180 command lines
(``python -m dcbh_tf.train --epochs 2 ...``, ``./run.sh train ddch --bits 48``, ``./run.sh
reproduce --methods ...``). A flag renamed in the code but not in a README fails only the
user who copies the line; this test fails first. Flags are read from each module as absl
registers them (its settings dataclass included), in a process of its own per module: two
entry modules define flags of one name, and importing them into one process would mix them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from checkout import ROOT

# Flags every absl program takes without defining them (absl.app adds them when it runs).
ABSL_BUILTINS = frozenset({"help", "helpshort", "helpfull", "helpxml", "flagfile", "undefok",
                           "only_check_args", "pdb", "pdb_post_mortem", "run_with_pdb",
                           "run_with_profiling", "profile_file", "use_cprofile_for_profiling"})
# Commands whose flags are defined in another module than the one run (the builder module
# registers a tensorflow-datasets builder and hands its command to common/cli).
FLAGS_MODULE = {"common.data.tfds_builder": "common.cli.tfds_prepare"}
# Packages the documentation invents as examples (README "Adding a method": mymethod_tf/).
EXAMPLE_PACKAGES = frozenset({"mymethod_tf"})
RUN_SH_MODULES = {"train": "train", "eval": "evaluate", "export": "export"}

_PYTHON_M = re.compile(r"python[0-9.]* -m ([a-z_][a-z0-9_.]*[a-z0-9_])(?![\w.]*[A-Z])(.*)")
_RUN_SH = re.compile(r"\./run\.sh (train|eval|export|reproduce|bench [a-z_]+)(?![\w-])(.*)")
_PYTHON_BENCH = re.compile(r"python[0-9.]* (bench/[a-z_]+\.py)(.*)")
_INLINE_CODE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
_FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9_]*)")


@dataclass(frozen=True)
class Command:
    """One documented command line: where it is, the module it runs, the flags it names."""

    where: str
    module: str
    flags: tuple[str, ...]


def commands_in(text: str, where: str, markdown: bool = False) -> list[Command]:
    """The commands of ``text`` (a Python file, or a Markdown file's code blocks and inline
    code when ``markdown``): ``python -m MODULE``, ``python bench/NAME.py``, ``./run.sh
    train|eval|export [METHOD]``, ``./run.sh reproduce`` and ``./run.sh bench NAME``, each
    at the line it starts on. A line ending in a backslash
    goes on in the next; a shell comment ends a line; ``--no<flag>`` counts as ``<flag>``
    (absl's booleans)."""
    found = []
    in_code = not markdown
    pending, start = "", 0
    for number, line in enumerate(text.splitlines(), 1):
        if markdown and line.lstrip().startswith("```"):
            in_code, pending = not in_code, ""
            continue
        if not in_code:  # prose: its inline code spans, each a line of its own
            for span in _INLINE_CODE.findall(line):
                module, rest = _module_of(span)
                if module is not None:
                    found.append(Command(f"{where}:{number}", module,
                                         tuple(_FLAG.findall(rest))))
            continue
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.lstrip().startswith("#"):
            continue
        module, rest = _module_of(line.split(" # ")[0])
        if module is not None:
            found.append(Command(f"{where}:{start}", module, tuple(_FLAG.findall(rest))))
    return found


def _module_of(line: str) -> tuple[str | None, str]:
    for pattern in (_PYTHON_M, _PYTHON_BENCH):
        match = pattern.search(line)
        if match:
            return match.group(1), match.group(2)
    match = _RUN_SH.search(line)
    if not match:
        return None, ""
    command, rest = match.groups()
    if command == "reproduce":
        return "common.reproduce", rest
    if command.startswith("bench "):
        return f"bench/{command.split()[1]}.py", rest
    words = rest.split()
    method = "dcbh"
    if words and not words[0].startswith("-") and re.fullmatch(r"[a-z]+", words[0]):
        method = words[0]
    return f"{method}_tf.{RUN_SH_MODULES[command]}", rest


def documented_commands() -> list[Command]:
    """Every command of the READMEs, docs/*.md (code blocks and inline code) and the
    project's Python files outside tests/ (docstrings: usage lines)."""
    root = Path(ROOT)
    found: list[Command] = []
    markdown = [root / "README.md", *sorted(root.glob("docs/*.md")),
                *sorted(root.glob("*/README.md")), *sorted(root.glob("*/*/README.md"))]
    for path in markdown:
        found += commands_in(path.read_text(encoding="utf-8"), str(path.relative_to(root)),
                             markdown=True)
    for path in sorted(root.glob("*/**/*.py")):
        parts = path.relative_to(root).parts
        if parts[0] == "tests" or parts[0].startswith("."):
            continue
        found += commands_in(path.read_text(encoding="utf-8"), str(path.relative_to(root)))
    return found


_LIST_FLAGS = """
import importlib, importlib.util, json, os, sys
if sys.argv[1].endswith(".py"):  # a bench script: run its top (flags), not its main
    sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[1])))  # as python bench/x.py
    spec = importlib.util.spec_from_file_location("bench_script", sys.argv[1])
    sys.modules["bench_script"] = script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    getattr(script, "define_flags", lambda: None)()  # defined only when run as a script
else:
    importlib.import_module(sys.argv[1])
from absl import flags
print(json.dumps(sorted(flags.FLAGS)))
"""


def defined_flags(module: str) -> set[str]:
    """The flags ``module`` takes: those absl knows once it (its ``__main__`` for a package;
    a bench script by its path) is imported, or for a bench script on argparse those its
    ``--help`` lists; in a new process. Raises with the error when the module does not
    exist."""
    target = FLAGS_MODULE.get(module, module)
    if target.endswith(".py") and "import argparse" in (Path(ROOT) / target).read_text():
        command = [sys.executable, target, "--help"]
    else:
        if not target.endswith(".py") and (Path(ROOT) / target.replace(".", "/") /
                                           "__main__.py").exists():
            target += ".__main__"
        command = [sys.executable, "-c", _LIST_FLAGS, target]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120,
                            env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2"))
    if result.returncode != 0:
        raise AssertionError(f"python -m {module}: cannot import {target}:\n"
                             f"{result.stderr[-1500:]}")
    if command[-1] == "--help":
        return set(_FLAG.findall(result.stdout))
    return set(json.loads(result.stdout.splitlines()[-1])) | ABSL_BUILTINS


def unknown_flags(commands: list[Command], known: dict[str, set[str]]) -> list[str]:
    """``where: python -m MODULE --flag`` for each flag the module does not define."""
    bad = []
    for command in commands:
        for flag in command.flags:
            names = known[command.module]
            if flag not in names and not (flag.startswith("no") and flag[2:] in names):
                bad.append(f"{command.where}: python -m {command.module} --{flag}")
    return bad


def test_the_extractor_finds_commands_their_modules_and_flags():
    text = ("Prose: python -m not.in.a.block --x\n"
            "```sh\n"
            "python -m ddch_tf.train --bits 48 \\\n    --noshuffle  # --not_a_flag in a comment\n"
            "# python -m commented.out --x\n"
            "./run.sh train ddh --epochs 2\n"
            "./run.sh eval --model_dir runs/a\n"
            "./run.sh reproduce --methods dcbh,ddch\n"
            "see dfh_tf.gan.train. Run python -m dfh_tf.gan.train.\n"
            "```\n"
            "Prose with `./run.sh bench search --sizes 1000` and `python bench/x.py --y 1`.\n")
    found = commands_in(text, "X.md", markdown=True)
    assert [(c.where, c.module, c.flags) for c in found] == [
        ("X.md:3", "ddch_tf.train", ("bits", "noshuffle")),
        ("X.md:6", "ddh_tf.train", ("epochs",)),
        ("X.md:7", "dcbh_tf.evaluate", ("model_dir",)),
        ("X.md:8", "common.reproduce", ("methods",)),
        ("X.md:9", "dfh_tf.gan.train", ()),
        ("X.md:11", "bench/search.py", ("sizes",)),
        ("X.md:11", "bench/x.py", ("y",)),
    ]
    known = {"ddch_tf.train": {"bits", "shuffle"}, "ddh_tf.train": {"bits"},
             "dcbh_tf.evaluate": {"model_dir"}, "common.reproduce": {"methods"},
             "dfh_tf.gan.train": set(), "bench/search.py": {"sizes"}, "bench/x.py": {"y"}}
    assert unknown_flags(found, known) == ["X.md:6: python -m ddh_tf.train --epochs"]


def test_a_module_that_does_not_exist_is_named():
    with pytest.raises(AssertionError, match="python -m no_such_tf.train: cannot import"):
        defined_flags("no_such_tf.train")


def test_every_documented_command_names_flags_its_module_defines():
    commands = [c for c in documented_commands()
                if c.module.split(".")[0] not in EXAMPLE_PACKAGES]
    modules = sorted({c.module for c in commands})
    # The documentation's commands reach every method and the search (a guard against the
    # extractor silently finding nothing).
    assert len(commands) > 100
    assert {"dcbh_tf.train", "ddch_tf.train", "face_search", "common.reproduce"} <= set(modules)
    known = {module: defined_flags(module) for module in modules}
    assert unknown_flags(commands, known) == []
