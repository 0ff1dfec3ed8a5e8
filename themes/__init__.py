"""Change Ahead's themes: Textual `Theme` objects and the app's semantic colour variables.

Three themes ship: `ahead-dark`, `ahead-light` and `ahead-contrast` (high contrast). Screens and
widgets use only semantic variables (`$run-ok`, `$run-failed`, `$run-active`, `$pending`,
`$drift`, `$drift-unknown`, `$drift-acked`, ...) so a theme changes every state colour in one
place. The stylesheet `ahead.tcss` lives in this package so it ships in the wheel.
"""

from __future__ import annotations

from pathlib import Path

from textual.theme import Theme

STYLESHEET = Path(__file__).with_name("ahead.tcss")

# Default values of the app-specific variables (App.get_theme_variable_defaults); each theme
# may override them in its `variables`.
VARIABLE_DEFAULTS: dict[str, str] = {
    "run-ok": "#4EBF71",
    "run-failed": "#E5534B",
    "run-active": "#58A6FF",
    "run-queued": "#8B949E",
    "run-waiting": "#D29922",
    "run-cancelled": "#A371F7",
    "run-interrupted": "#F0883E",
    "pending": "#D29922",
    "drift": "#F0883E",
    "drift-unknown": "#DB61A2",
    "drift-acked": "#8B949E",
    "deployed": "#4EBF71",
    "muted": "#8B949E",
    "approval-pending": "#D29922",
}

AHEAD_DARK = Theme(
    name="ahead-dark",
    primary="#58A6FF",
    secondary="#A371F7",
    accent="#F0883E",
    warning="#D29922",
    error="#E5534B",
    success="#4EBF71",
    foreground="#E6EDF3",
    background="#0D1117",
    surface="#161B22",
    panel="#21262D",
    dark=True,
    variables={**VARIABLE_DEFAULTS, "footer-key-foreground": "#58A6FF"},
)

AHEAD_LIGHT = Theme(
    name="ahead-light",
    primary="#0969DA",
    secondary="#8250DF",
    accent="#BC4C00",
    warning="#9A6700",
    error="#CF222E",
    success="#1A7F37",
    foreground="#1F2328",
    background="#FFFFFF",
    surface="#F6F8FA",
    panel="#EAEEF2",
    dark=False,
    variables={
        **VARIABLE_DEFAULTS,
        "run-ok": "#1A7F37",
        "run-failed": "#CF222E",
        "run-active": "#0969DA",
        "run-queued": "#6E7781",
        "run-waiting": "#9A6700",
        "run-cancelled": "#8250DF",
        "run-interrupted": "#BC4C00",
        "pending": "#9A6700",
        "drift": "#BC4C00",
        "drift-unknown": "#BF3989",
        "drift-acked": "#6E7781",
        "deployed": "#1A7F37",
        "muted": "#6E7781",
        "approval-pending": "#9A6700",
    },
)

AHEAD_CONTRAST = Theme(
    name="ahead-contrast",
    primary="#FFFF00",
    secondary="#00FFFF",
    accent="#FF00FF",
    warning="#FFFF00",
    error="#FF5555",
    success="#00FF00",
    foreground="#FFFFFF",
    background="#000000",
    surface="#000000",
    panel="#1A1A1A",
    dark=True,
    variables={
        **VARIABLE_DEFAULTS,
        "run-ok": "#00FF00",
        "run-failed": "#FF5555",
        "run-active": "#00FFFF",
        "run-queued": "#FFFFFF",
        "run-waiting": "#FFFF00",
        "run-cancelled": "#FF00FF",
        "run-interrupted": "#FFAA00",
        "pending": "#FFFF00",
        "drift": "#FFAA00",
        "drift-unknown": "#FF55FF",
        "drift-acked": "#C0C0C0",
        "deployed": "#00FF00",
        "muted": "#C0C0C0",
        "approval-pending": "#FFFF00",
        "footer-key-foreground": "#FFFF00",
    },
)

THEMES: tuple[Theme, ...] = (AHEAD_DARK, AHEAD_LIGHT, AHEAD_CONTRAST)
DEFAULT_THEME = AHEAD_DARK.name
