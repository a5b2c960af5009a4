"""The rules file: which exams and events are checked against which dose limits. Pure: no I/O, no clock.

``parse_rules(text, source=path)`` turns the TOML text into a ``RuleSet`` or raises ``ConfigError``
with one line naming the file, the rule and the key. ``evaluate(exam, rules)`` returns every
``Exceedance`` of one exam, in a fixed order. ``screen(rules, protocols)`` turns the rules into
questions the database can answer per study row, so that ``backfill`` reads in full only the exams
that could exceed something. See ``examples/rules.toml`` for a commented file.

The file
    ``[defaults] recipients`` are told about every exceedance of an exam that no ``[[route]]``
    matches, ``[defaults] alert_recipients`` besides about its alerts. A ``[[route]]`` has a unique
    ``name``, ``station`` and/or ``not_station`` (as in a rule: station name or display name of any
    row of the exam), ``recipients`` (required) and optional ``alert_recipients``: the exams it
    matches go to the recipients (and, for alerts, the alert recipients) of every route that
    matches them instead of the defaults. Each ``[[rule]]`` has a unique ``name`` (its identity is
    ``core.model.rule_identity``: case and spacing do not count; "Scanner Dose Check" is reserved),
    criteria, at least one limit and optional ``recipients`` (added to the defaults or the routes'
    recipients). ``[dose_check] notify = true`` also reports the scanner's own NEMA XR-25 Dose Check
    values (optional ``recipients``, added likewise). Any other key, anywhere, is an error.
    Addresses need one "@" with text on both sides and no spaces, commas, semicolons, quotes, angle
    brackets or control characters.

Criteria (all optional; different keys must all pass)
    Exam level, over every study row of the exam (a positive key passes when ANY value matches, its
    ``not_`` twin excludes when ANY value matches): ``study`` (study description), ``procedure``
    (requested procedure or procedure code meaning), ``station`` (station name or display name),
    ``manufacturer`` and ``model`` (the equipment's manufacturer and model name);
    ``age_min <= age < age_max`` in years: the patient's possible ages (``core.exam.age_range``)
    must overlap the band; ``weight_min <= weight < weight_max`` in kg (the first row with a
    weight above 0 and at most 500 kg). An unknown age or weight never matches a band.
    Event level, each event: ``protocol`` (acquisition protocol), ``standard_name`` (the event's
    OpenREM standard names and those of its study row), ``target_region`` (the code meaning of the
    target region, where OpenREM has one), each with a ``not_`` twin; ``phantom`` ("head" = 16 cm,
    "body" = 32 cm CTDIw phantom; a one-entry list is the same, both at once is refused);
    ``acquisition_type`` / ``not_acquisition_type``: one of, or a list of (one of), "spiral",
    "sequenced", "stationary", "constant_angle" (the localiser), "free", matched on OpenREM's code
    value (``ruleset.ACQUISITION_TYPES``); an unknown code never matches and never excludes.

    A text criterion is a string, a one-entry list, or ``{ any = [...] }`` (any entry matches) or
    ``{ all = [...] }`` (every entry matches the same value). A bare list of two or more entries is
    refused with one line showing both spellings (the old script's ``['ped', 'head']`` meant all,
    this file's once any). An entry is a string or a list of words. A string matches when all its
    whitespace-separated words occur in the value, case-insensitively, in any order (``"ped head"``
    matches "HEAD PED ROUTINE"). In a list of words each word is matched as written, spaces
    included (``[["ped", "head"]]`` is ``"ped head"``; ``[["with contrast"]]`` needs the phrase). A
    string starting ``re:`` is a regular expression (``re.search``, ignoring case). Text is
    compared after Unicode NFC normalisation and case folding. A missing or empty value never
    matches a criterion and never excludes. ``phantom``, ``acquisition_type`` and ``severity`` are
    enumerated, not text: no any/all.

Limits (strictly greater than the limit is an exceedance; a missing, infinite or NaN dose never is)
    ``ctdivol`` (mGy) and ``dlp`` (mGy·cm) apply to each event the rule matches (below).
    ``dlp_total`` (mGy·cm) applies to the exam's total DLP when the rule matches the exam for it
    (below): ``not_protocol = "perfusion"`` keeps a perfusion exam out of its total-DLP limit.
    ``drl_ctdivol``, ``drl_dlp``, ``drl_dlp_total`` are reference levels instead: the limit is the
    level × ``notify_above`` (a number > 0, default 1; only with a ``drl_`` key), exactly (Decimal).
    A rule may not set both ``ctdivol`` and ``drl_ctdivol`` (likewise the others). ``reference``
    (one line, at most 200 characters) names the source, with plain limits too. Exceedances carry
    ``limit`` (the effective one), ``reference``, ``reference_value`` (the level, None for a plain
    limit) and ``multiple`` (``notify_above``, None for a plain limit). ``severity`` is
    "notification" (default) or "alert"; an exceedance carries it, and an alert goes to the
    ``alert_recipients`` of its routes (or the defaults) too.

What "matches" means (``explain`` traces it)
    A rule matches the EXAM when its exam-level criteria pass. It matches an EVENT when it matches
    the exam and the event passes its event-level criteria (protocol, standard_name, phantom,
    acquisition_type, target_region pass; no ``not_`` one excludes it), whatever the dose. It
    matches the exam FOR ``dlp_total`` when it matches the exam, some event passes the positive
    event-level criteria (if it has any) and no event is excluded by a ``not_`` event-level
    criterion.

Precedence: ``priority`` and ``stop``
    Rules are applied in order of ``priority`` (an integer, default 0, highest first), ties in file
    order (``RuleSet.rules`` is in that order). Every matching rule reports, unless a rule says
    ``stop = true``: then it REPLACES every rule after it for each check it makes itself: on each
    event it matches, later rules do not check the per-event metrics it has a limit for (plain or
    reference level); when it matches the exam for ``dlp_total`` and has that limit, later rules do
    not check ``dlp_total``. A stop rule with only ``ctdivol`` leaves later rules' ``dlp`` and
    ``dlp_total`` alone. Of two stop rules with one priority the first in the file wins.

Dose Check (``[dose_check] notify = true``)
    For each event and metric, the highest value over a configured (not false), finite, positive
    notification or alert value: notification values against the event's forward estimate (else its
    CTDIvol or DLP), alert values against the accumulated forward estimate only.

Order of the results: rules in precedence order (the Dose Check last); within a rule ``dlp_total``,
then ``ctdivol``, then ``dlp`` (Dose Check: notification CTDIvol, DLP, alert CTDIvol, DLP); then
events in exam order. ``trace(exam, rules)`` gives, per rule, the verdict of every criterion with
the exam's value and every comparison made (``explain.py``); ``evaluate`` is that trace filtered to
the exceedances, so the two never disagree.
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
