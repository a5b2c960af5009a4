"""The rules file: which exams and events are checked against which dose limits. Pure: no I/O, no clock.

``parse_rules(text, source=path)`` turns the TOML text into a ``RuleSet`` or raises ``ConfigError``
with one line naming the file, the rule and the key. ``evaluate(exam, rules)`` returns every
``Exceedance`` of one exam, in a fixed order. ``screen(rules, protocols)`` turns the rules into
questions the database can answer per study row, so that ``backfill`` reads in full only the exams
that could exceed something. See ``examples/rules.toml`` for a commented file.

The file
    ``[defaults] recipients`` are told about every exceedance of an exam that no ``[[route]]``
    matches. A ``[[route]]`` has a unique ``name``, ``station`` and/or ``not_station`` (as in a
    rule: station name or display name of any row of the exam) and ``recipients`` (required): the
    exams it matches go to the recipients of every route that matches them instead of the defaults.
    Each ``[[rule]]`` has a unique
    ``name`` (its identity is ``core.model.rule_identity``: case and spacing do not count; "Scanner Dose
    Check" is reserved), criteria, at least one
    limit and optional ``recipients`` (added to the defaults or the routes' recipients).
    ``[dose_check] notify = true`` also reports the scanner's own NEMA XR-25 Dose Check values
    (optional ``recipients``, added likewise). Any other key, anywhere, is an error. Addresses need
    one "@" with text on both sides and no spaces, commas, semicolons, quotes, angle brackets or control characters.

Criteria (all optional; different keys must all pass, entries of one key are alternatives)
    ``study`` (study description), ``procedure`` (requested procedure or procedure code meaning),
    ``station`` (station name or display name) look at every study row of the exam: a positive key
    passes when ANY value matches, its ``not_`` twin excludes when ANY value matches.
    ``protocol`` (acquisition protocol) and ``standard_name`` (the event's OpenREM standard names and
    those of its study row) look at each event. ``phantom`` ("head" = 16 cm, "body" = 32 cm CTDIw
    phantom) too. ``age_min <= age < age_max`` in years: the patient's possible ages
    (``core.exam.age_range``) must overlap the band; an unknown age never matches an age band.

    A criterion is a string or a list of entries. An entry is a string or a list of words. A string
    matches when all its whitespace-separated words occur in the value, case-insensitively, in any
    order (``"ped head"`` matches "HEAD PED ROUTINE"). In a list of words each word is matched as
    written, spaces included (``[["ped", "head"]]`` is ``"ped head"``; ``[["with contrast"]]`` needs
    the phrase). A string starting ``re:`` is a regular expression (``re.search``, ignoring case).
    Text is compared after Unicode NFC normalisation and case folding. A missing or empty value
    never matches a criterion and never excludes.

Limits (strictly greater than the limit is an exceedance; a missing, infinite or NaN dose never is)
    ``ctdivol`` (mGy) and ``dlp`` (mGy·cm) apply to each event that passes the exam-level and
    event-level criteria. ``dlp_total`` (mGy·cm) applies to the exam's total DLP when the exam-level
    criteria pass, some event passes the positive event-level criteria (if the rule has any) and no
    event is excluded by a ``not_`` event-level criterion (``not_protocol = ["perfusion"]`` keeps a
    perfusion exam out of its total-DLP limit).

Dose Check (``[dose_check] notify = true``)
    For each event and metric, the highest value over a configured (not false), finite, positive
    notification or alert value: notification values against the event's forward estimate (else its
    CTDIvol or DLP), alert values against the accumulated forward estimate only.

Order of the results: rules in file order (the Dose Check last); within a rule ``dlp_total``, then
``ctdivol``, then ``dlp`` (Dose Check: notification CTDIvol, DLP, alert CTDIvol, DLP); then events in
exam order. Every matching rule reports: two rules give two exceedances for one event.
"""

from ctpoller.core.rules.evaluate import evaluate, routed_recipients, routes_of
from ctpoller.core.rules.explain import Check, EventTrace, RuleTrace, Verdict, trace
from ctpoller.core.rules.parse import parse_rules
from ctpoller.core.rules.ruleset import DOSE_CHECK_RULE, DoseCheckConfig, Entry, Route, Rule, RuleSet
from ctpoller.core.rules.screen import SCREEN_MARGIN, Bound, Screen, screen

__all__ = [
    "DOSE_CHECK_RULE",
    "SCREEN_MARGIN",
    "Bound",
    "Check",
    "DoseCheckConfig",
    "Entry",
    "EventTrace",
    "Route",
    "Rule",
    "RuleSet",
    "RuleTrace",
    "Screen",
    "Verdict",
    "evaluate",
    "parse_rules",
    "routed_recipients",
    "routes_of",
    "screen",
    "trace",
]
