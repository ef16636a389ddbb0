"""Argument types for command-line options that take bounded numbers or lists of them."""

import argparse


def parse_number(text: str, kind: type) -> int | float:
    try:
        return kind(text)
    except ValueError:
        noun = "a whole number" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None


def positive_int(text: str) -> int:
    value = parse_number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = parse_number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 0, got {text}")
    return value


def positive_float(text: str) -> float:
    value = parse_number(text, float)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = parse_number(text, float)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number of at least 0, got {text}")
    return value


def unit_float(text: str) -> float:
    value = parse_number(text, float)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number above 0 and at most 1, got {text}")
    return value


def positive_int_list(text: str) -> tuple[int, ...]:
    """Parse comma-separated whole numbers of at least 1, such as "16,32,64"."""
    values = tuple(parse_number(part.strip(), int) for part in text.split(","))
    if any(value < 1 for value in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers of at least 1, got {text}")
    return values
