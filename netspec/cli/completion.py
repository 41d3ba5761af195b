"""``netspec completion bash|zsh``: a shell completion script for the commands, their options,
the choices of options that have them, and the shipped architectures' names.

The script is generated from the parser itself, so a new command or option is completed as
soon as it exists; architecture names are those shipped when the script was written.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass

SHELLS = ("bash", "zsh")
# positional arguments that take a spec: a shipped architecture's name or a .toml file
SPEC_DESTS = frozenset({"spec"})


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "completion", help="print a bash or zsh completion script",
        description="Print a script that completes netspec's commands, options, option "
        "values and the shipped architectures' names. bash: add "
        "'eval \"$(netspec completion bash)\"' to ~/.bashrc. zsh: add "
        "'eval \"$(netspec completion zsh)\"' to ~/.zshrc after compinit, or save the output "
        "as _netspec in a folder of your $fpath.")
    parser.add_argument("shell", choices=SHELLS, help="the shell to complete in")
    parser.set_defaults(handler=run_completion)


def run_completion(args: argparse.Namespace) -> int:
    sys.stdout.write(completion_script(args.shell))
    return 0


@dataclass(frozen=True)
class Option:
    flags: tuple[str, ...]
    help: str
    takes_value: bool
    choices: tuple[str, ...]


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    options: tuple[Option, ...]
    # one entry per positional argument: "spec", "choice:a b c" or "file"
    positionals: tuple[tuple[str, tuple[str, ...]], ...]


def commands() -> list[Command]:
    """Every command of the full parser, with its options and positional arguments."""
    from netspec.cli import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
    found = []
    for name, sub in action.choices.items():
        options, positionals = [], []
        for argument in sub._actions:
            choices = tuple(str(c) for c in argument.choices or ())
            if argument.option_strings:
                if argument.help == argparse.SUPPRESS:
                    continue
                options.append(Option(tuple(argument.option_strings), _plain(argument.help),
                                      argument.nargs != 0, choices))
            elif argument.dest in SPEC_DESTS:
                positionals.append(("spec", ()))
            else:
                positionals.append(("choice" if choices else "file", choices))
        found.append(Command(name, _plain(helps.get(name, "")), tuple(options),
                             tuple(positionals)))
    return found


def architecture_names() -> list[str]:
    from netspec.lang.shipped import shipped_architectures

    return [path.stem for path in shipped_architectures()]


def completion_script(shell: str) -> str:
    if shell == "bash":
        return _bash(commands(), architecture_names())
    if shell == "zsh":
        return _zsh(commands(), architecture_names())
    raise ValueError(f"no completion for {shell!r}; choose from {', '.join(SHELLS)}")


def _plain(text: str | None) -> str:
    """Help text on one line, without argparse's %-escapes."""
    return " ".join((text or "").replace("%%", "%").split())


def _words(values: list[str] | tuple[str, ...]) -> str:
    return " ".join(values)


def _bash(found: list[Command], architectures: list[str]) -> str:
    option_cases, value_cases, positional_cases = [], [], []
    for command in found:
        flags = [flag for option in command.options for flag in option.flags]
        option_cases.append(f"        {command.name}) opts='{_words(flags)}' ;;")
        for option in command.options:
            if option.takes_value:
                words = _words(option.choices)
                reply = (f'COMPREPLY=($(compgen -W "{words}" -- "$cur"))' if option.choices
                         else "compopt -o default; COMPREPLY=()")
                pattern = "|".join(f"{command.name}:{flag}" for flag in option.flags)
                value_cases.append(f"        {pattern}) {reply}; return ;;")
        if command.positionals:
            kind, choices = command.positionals[0]
            if kind == "spec":
                positional_cases.append(f"        {command.name}) _netspec_specs; return ;;")
            elif kind == "choice":
                positional_cases.append(f'        {command.name}) COMPREPLY=($(compgen -W '
                                        f'"{_words(choices)}" -- "$cur")); return ;;')
    return _BASH.format(commands=_words([command.name for command in found]),
                        architectures=_words(architectures),
                        option_cases="\n".join(option_cases),
                        value_cases="\n".join(value_cases),
                        positional_cases="\n".join(positional_cases))


_BASH = """\
# bash completion for netspec: eval "$(netspec completion bash)" in ~/.bashrc
_netspec_specs() {{
    COMPREPLY=($(compgen -W "{architectures}" -- "$cur"))
    compopt -o filenames
    local IFS=$'\\n'
    COMPREPLY+=($(compgen -d -- "$cur") $(compgen -f -X '!*.toml' -- "$cur"))
}}

_netspec() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    local command="" i
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${{COMP_WORDS[i]}}" in
            -*) ;;
            *) command="${{COMP_WORDS[i]}}"; break ;;
        esac
    done
    if [[ -z "$command" ]]; then
        COMPREPLY=($(compgen -W "{commands} --help --version" -- "$cur"))
        return
    fi
    case "$command:$prev" in
{value_cases}
    esac
    local opts=""
    case "$command" in
{option_cases}
    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
        return
    fi
    # the first word after the command is its positional argument
    local positional=0
    for ((i = i + 1; i < COMP_CWORD; i++)); do
        [[ "${{COMP_WORDS[i]}}" != -* ]] && positional=1
    done
    if ((positional == 0)); then
        case "$command" in
{positional_cases}
        esac
    fi
    compopt -o default
    COMPREPLY=()
}}
complete -F _netspec netspec
"""


def _zsh_quote(text: str) -> str:
    """Text inside an _arguments description: brackets, colons and quotes escaped."""
    text = re.sub(r"([\[\]:\\])", r"\\\1", text)
    return text.replace("'", "'\\''")


def _zsh(found: list[Command], architectures: list[str]) -> str:
    described = "\n".join(f"        '{command.name}:{_zsh_quote(command.help)}'"
                          for command in found)
    cases = []
    for command in found:
        specs = []
        for option in command.options:
            description = _zsh_quote(option.help[:120])
            if option.takes_value:
                value = (f":value:({' '.join(option.choices)})" if option.choices
                         else ":value:_files")
            else:
                value = ""
            if len(option.flags) > 1:
                exclusive = " ".join(option.flags)
                names = ",".join(option.flags)
                specs.append(f"'({exclusive})'{{{names}}}'[{description}]{value}'")
            else:
                specs.append(f"'{option.flags[0]}[{description}]{value}'")
        for kind, choices in command.positionals[:1]:
            if kind == "spec":
                specs.append("'1:spec:_netspec_specs'")
            elif kind == "choice":
                specs.append(f"'1:value:({' '.join(choices)})'")
            else:
                specs.append("'*:file:_files'")
        arguments = " \\\n                ".join(specs)
        cases.append(f"        {command.name})\n            _arguments -s \\\n"
                     f"                {arguments} ;;")
    return _ZSH.format(architectures=" ".join(architectures), described=described,
                       cases="\n".join(cases))


_ZSH = """\
#compdef netspec
# zsh completion for netspec: eval "$(netspec completion zsh)" in ~/.zshrc after compinit,
# or save this as _netspec in a folder of your $fpath

_netspec_specs() {{
    local -a architectures
    architectures=({architectures})
    _alternative 'architectures:shipped architecture:compadd -a architectures' \\
        'files:spec file:_files -g "*.toml"'
}}

_netspec() {{
    local -a commands
    commands=(
{described}
    )
    if (( CURRENT == 2 )); then
        _describe -t commands 'netspec command' commands
        _arguments '--help[show the help]' '--version[show the version]'
        return
    fi
    local command=${{words[2]}}
    shift words
    (( CURRENT-- ))
    case $command in
{cases}
    esac
}}

if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
    _netspec "$@"
else
    compdef _netspec netspec
fi
"""
