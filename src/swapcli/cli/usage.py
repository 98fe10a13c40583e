"""Help and usage errors the way Click tools read: `swapcli image [OPTIONS] SOURCE TARGET`,
types as PATH, INTEGER, FLOAT, TEXT, and a bad option as one `swapcli: error:` line.

Typer 0.2x renders required arguments as `{source}`, types as `<list[Path]>` and
usage errors as a boxed panel with the whole usage; scripts that parse stderr and
people used to Click read neither well. These classes change only the rendering
and the error path; parsing stays Typer's.
"""

from __future__ import annotations

import sys
from typing import Any, get_args, get_origin

from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

_TYPE_NAMES = {"int": "INTEGER", "float": "FLOAT", "str": "TEXT", "bool": "BOOLEAN"}


def _type_name(annotation: Any) -> str:
    if get_origin(annotation) is list:
        return _type_name(get_args(annotation)[0])
    name = getattr(annotation, "__name__", str(annotation))
    if name.endswith("Path"):
        return "PATH"
    return _TYPE_NAMES.get(name, name.upper())


class _Argument(TyperArgument):
    def _usage_display_name(self) -> str:
        name = self.display_name_raw
        name = name if self.required else f"[{name}]"
        return name + ("..." if self.nargs != 1 and " " not in name else "")

    def display_type_rich(self, ctx: Any) -> str | None:
        return _type_name(self.type_descriptor.annotation)


class _Option(TyperOption):
    def display_type_rich(self, ctx: Any) -> str | None:
        if self.metavar is not None:
            return self.metavar
        if self.is_flag:
            return None
        return _type_name(self.type_descriptor.annotation)


class Command(TyperCommand):
    """Click-style usage line and types (argument names upper-cased unless given a metavar)."""

    def get_params(self, ctx: Any) -> list:
        params = super().get_params(ctx)  # includes --help, made on demand
        _click_style(params)
        return params


def _click_style(params: list) -> None:
    for param in params:
        if isinstance(param, TyperArgument) and not isinstance(param, _Argument):
            param.__class__ = _Argument
            if param.metavar is None:
                param.metavar = param.name.upper()
        elif isinstance(param, TyperOption) and not isinstance(param, _Option):
            param.__class__ = _Option


def _given(args: list[str], names: list[str]) -> str | None:
    """The value the user typed for an option (the last one wins, as in parsing)."""
    value = None
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                value = args[i + 1]
            elif arg.startswith(name + "="):
                value = arg[len(name) + 1:]
    return value


def _out_of_range(param: Any, args: list[str]) -> bool:
    low, high = getattr(param, "min", None), getattr(param, "max", None)
    try:
        value = float(_given(args, list(param.opts)))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return (low is not None and value < low) or (high is not None and value > high)


def _usage_error(exc: Any, args: list[str]) -> str:
    """One line: what is wrong, with the value given, and where the full usage is."""
    param = getattr(exc, "param", None)
    if isinstance(param, TyperOption) and type(exc).__name__ == "BadParameter" and _out_of_range(param, args):
        low, high = param.min, param.max
        bounds = (f"between {low} and {high}" if low is not None and high is not None
                  else f"at least {low}" if low is not None else f"at most {high}")
        name = next((o for o in param.opts if o.startswith("--")), param.opts[0])
        message = f"{name} must be {bounds} (got {_given(args, list(param.opts))})"
    else:
        message = " ".join(exc.format_message().split()).rstrip(".")
        message = message[0].lower() + message[1:] if message[:1].isupper() and message[1:2].islower() else message
    ctx = getattr(exc, "ctx", None)
    where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    return f"swapcli: error: {message}{where}"


class Group(TyperGroup):
    """The root group: usage errors of every command become one line with exit 2."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        import typer

        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.Abort:
            sys.stderr.write("swapcli: interrupted\n")
            sys.exit(130)
        except typer.TyperException as exc:  # Typer's (vendored Click's) usage errors
            if not hasattr(exc, "format_message"):
                raise
            if type(exc).__name__ == "NoArgsIsHelpError":  # `swapcli` or `swapcli image` alone: the help
                sys.stderr.write(exc.format_message() + "\n")
            else:
                sys.stderr.write(_usage_error(exc, list(sys.argv[1:] if args is None else args)) + "\n")
            sys.exit(getattr(exc, "exit_code", 2))
        sys.exit(rv if isinstance(rv, int) else 0)
