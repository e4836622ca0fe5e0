# ruff: noqa: RUF001
"""The curated pattern library (English, German, French, Spanish, plus Italian, Portuguese,
Russian and Hindi cues).

Patterns are written on lower-cased text; a single space in a pattern means "a short gap of
non-word characters, possibly empty", so that the same pattern also matches squashed text from
the ``spaced`` view ("ignoreallpreviousinstructions").

Speed: one Hyperscan pass over the text (``prefilter.py``) first names the rules that can match
at all, usually none. Every rule starts with a *lead* — a list of literal words or phrases (its
triggers); a remaining rule is only tried, anchored (``re.match``), where one of its trigger
words occurs as a token of the text (set lookups in C), or where one of its literal triggers
(``<|``, ``[inst]`` ...) occurs (``str.find``). There is no whole-text scan per rule.

The library was written from general knowledge of injection techniques and then tuned by looking
at the development set (dev.jsonl); cross-validated numbers of the whole detector are therefore
somewhat optimistic for the pattern part.

Scores are calibrated by hand to be comparable with the classifier's probability: 0.9-0.95
unambiguous attack phrasing, 0.7-0.85 strong cues, 0.4-0.6 weak cues (reported, but below the
default deny threshold on their own; the classifier also sees every fired rule as a feature, so
weak cues combine there).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from authz_service.layers.semantics.injection._regex import TOKEN, adjacent, tokenize
from authz_service.layers.semantics.injection.normalize import HINTS
from authz_service.layers.semantics.injection.prefilter import RulePrefilter

__all__ = ["RULES", "PatternHit", "PatternLibrary", "Rule"]

_GAP = r"[\W_]{0,6}"
_MAX_OCCURRENCES = 24
_END = r"(?![^\W_])"


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    category: str
    score: float
    pattern: str  # the full regex (lead + rest), spaces already replaced by gaps
    triggers: tuple[str, ...]  # first words of the lead phrases (or literal triggers)
    literal: bool  # triggers are literal substrings, not word tokens
    phrases: tuple[str, ...] = ()  # the lead phrases (word rules)


@dataclass(frozen=True, slots=True)
class PatternHit:
    rule: Rule
    start: int
    end: int


def _w(p: str) -> str:
    return p.replace(" ", _GAP)


def _rule(
    rid: str,
    cat: str,
    score: float,
    leads: str | tuple[str, ...],
    rest: str,
    literal: bool = False,
    prefix: str = "",
) -> Rule:
    """A rule: ``leads`` ("a|b c" words, or a tuple of literal strings) followed by ``rest``."""
    items = leads if isinstance(leads, tuple) else tuple(leads.split("|"))
    phrases = sorted({p.strip() for p in items if p.strip()}, key=lambda p: (-len(p), p))
    if literal:
        lead_rx = "|".join(re.escape(p) for p in phrases)
        triggers = tuple(phrases)
    else:
        lead_rx = "|".join(_GAP.join(re.escape(x) for x in p.split()) for p in phrases)
        triggers = tuple(sorted({p.split()[0] for p in phrases}))
    return Rule(
        rid,
        cat,
        score,
        prefix + "(?:" + lead_rx + ")" + _w(rest),
        triggers,
        literal,
        () if literal else tuple(phrases),
    )


_Q = (
    r"(?:(?:all|any|of|the|your|my|his|her|their|these|those|every|each|such|other|previous|"
    r"prior|preceding|above|earlier|former|original|initial|old|existing|given|system|"
    r"developer|safety|preset|default|current|programmed|assigned|provided|that|and|or|"
    r"above-mentioned|aforementioned|past|last|first|entire|whole|instructions and) ){0,5}"
)
_STRONG_NOUN = (
    r"(?:instructions?|prompts?|directions|directives?|rules|guidelines|commands|orders|"
    r"programming|guardrails|restrictions|constraints|polic(?:y|ies)|safeguards|requests|"
    r"tasks?|training|filters|limitations|ethics|settings|guidance|protocols?)\b"
)
_WEAK_NOUN = r"(?:messages?|texts?|context|conversation|inputs?|content|everything|information)\b"
_IGNORE = (
    "ignore|ignoring|ignored|ignores|disregard|disregarding|forget|forgetting|skip|override|"
    "overlook|neglect|discard|abandon|bypass|set aside|throw away|ditch|drop|circumvent|"
    "stop following|no longer follow|don't follow|dont follow|do not follow|never mind|"
    "nevermind|regardless of|despite|contrary to|deviate from|break|violate|erase|"
    "delete|clear|reset|cancel|void|nullify|supersede|replace|override all"
)
_REVEAL = (
    "reveal|print|show|display|output|repeat|tell|give|share|leak|disclose|expose|write|spell|"
    "list|dump|provide|recite|translate|summarize|summarise|return|echo|paste|copy|what is|"
    "what are|what was|what were|what's|whats|read|state|describe|explain|encode|rewrite"
)

_RULES: list[Rule] = [
    # --- instruction override
    _rule(
        "instruction_override.ignore_previous",
        "instruction_override",
        0.95,
        _IGNORE,
        r" " + _Q + _STRONG_NOUN,
    ),
    _rule(
        "instruction_override.forget_everything",
        "instruction_override",
        0.85,
        "forget|disregard|ignore",
        r" (?:about )?(?:everything|all(?: of it| that)?) "
        r"(?:(?:you|i|we|that|has|have|had|been|was|were|ve|re|is|are|the|so) ){0,4}"
        r"(?:said|told|know|learned|written|above|before|previously|so far|up to now|until now|"
        r"instructed|been told|heard)\b",
    ),
    _rule(
        "instruction_override.ignore_above",
        "instruction_override",
        0.75,
        "ignore|disregard|forget|skip|discard",
        r" (?:all )?(?:of )?(?:the |that |everything |what(?:'s| is| was)? )?(?:above|previous|"
        r"before|prior|preceding|earlier|said)\b",
    ),
    _rule(
        "instruction_override.ignore_previous_weak",
        "instruction_override",
        0.55,
        _IGNORE,
        r" (?:all |any |the |your |my |of |these |those )*(?:previous|prior|preceding|above|"
        r"earlier|former|original|initial|system) " + _WEAK_NOUN,
    ),
    _rule(
        "instruction_override.new_instructions",
        "instruction_override",
        0.7,
        "new|updated|revised|real|actual|true|secret|hidden|additional|overriding|priority|"
        "urgent|important|override",
        r" (?:system )?(?:instructions?|directives?|orders|task|objective|rules)\b ?(?::|follow|"
        r"are|is\b)",
    ),
    _rule(
        "instruction_override.instead",
        "instruction_override",
        0.55,
        "instead",
        r"(?:,)? (?:just )?(?:say|print|output|write|respond with|reply with|type|return)\b",
    ),
    _rule(
        "instruction_override.from_now_on",
        "instruction_override",
        0.6,
        "from now on|from this point on|from this point forward|henceforth|for the rest of "
        "this conversation",
        r"(?:,)? (?:you|your|ignore|only|always|do not|don't)\b",
    ),
    # --- system prompt / secret extraction
    _rule(
        "prompt_extraction.system_prompt",
        "prompt_extraction",
        0.9,
        _REVEAL,
        r" (?:\w+\W+){0,5}?(?:your |the |my |its )?(?:system|initial|original|hidden|secret|"
        r"internal|developer|pre-?prompt|preceding|prior|first|confidential|private|full|exact|"
        r"complete|above) ?(?:prompt|instructions?|message|directives?|configuration|rules|"
        r"guidelines|context|setup|text)\b",
    ),
    _rule(
        "prompt_extraction.your_instructions",
        "prompt_extraction",
        0.75,
        "reveal|print|show|display|output|repeat|tell|give|share|leak|disclose|recite|"
        "what are|what were|what is|list|dump",
        r" (?:me )?(?:all )?(?:of )?your (?:\w+\W+)?(?:instructions|prompt|rules|guidelines|"
        r"directives|programming|configuration)\b",
    ),
    _rule(
        "prompt_extraction.repeat_above",
        "prompt_extraction",
        0.85,
        "repeat|print|output|copy|reproduce|rewrite|recite|echo|show",
        r" (?:\w+\W+){0,3}?(?:words|text|content|everything|lines|characters|sentences|tokens|"
        r"prompt) (?:\w+\W+){0,2}?(?:above|before|preceding|prior|verbatim|word for word)\b",
    ),
    _rule(
        "prompt_extraction.secret",
        "prompt_extraction",
        0.75,
        "reveal|tell|give|print|show|share|leak|disclose|spell|say|write|output|provide|"
        "what is|what's|whats|type|encode|hint|confirm",
        r" (?:me )?(?:\w+\W+){0,3}?(?:the |your |that |this )?(?:secret |hidden )?(?:password|"
        r"passcode|passphrase|secret key|api key|access code|secret code|pin code|"
        r"credentials)\b",
    ),
    _rule(
        "prompt_extraction.secret_weak",
        "prompt_extraction",
        0.45,
        "password|secret key|api key|passphrase|system prompt|initial prompt",
        r"\b",
    ),
    # --- role / persona hijack
    _rule(
        "role_hijack.dan",
        "role_hijack",
        0.95,
        "do anything now|dan mode|jailbroken|stay in character|developer mode enabled|"
        "developer mode output|developer mode response|anti-dan|aim is|aim stands|dude is|"
        "stan is|evilbot|chaosgpt|chaos gpt|betterdan",
        r"\b",
    ),
    _rule(
        "role_hijack.dan_tag",
        "role_hijack",
        0.9,
        ("[dan]", "[jailbreak]", "[🔓jailbreak]"),
        "",
        literal=True,
    ),
    _rule(
        "role_hijack.mode_switch",
        "role_hijack",
        0.85,
        "enable|enabled|activate|activated|enter|entering|switch to|turn on|engage|unlock",
        r" (?:the )?(?:\w+\W+)?(?:developer|dev|debug|god|admin|sudo|unrestricted|jailbreak|root|"
        r"diagnostic|maintenance|unfiltered|uncensored|evil|dan|superuser|override|unlimited|"
        r"chaos) ?mode\b",
    ),
    _rule(
        "role_hijack.mode_on",
        "role_hijack",
        0.85,
        "developer|dev|debug|god|admin|sudo|jailbreak|root|diagnostic|maintenance|unfiltered|"
        "uncensored|superuser|override|dan",
        r" ?mode (?:is |has been )?(?:now )?(?:enabled|activated|on|engaged|unlocked)\b",
    ),
    _rule(
        "role_hijack.mode_word",
        "role_hijack",
        0.55,
        "developer|debug|god|admin|sudo|jailbreak|superuser|unrestricted|unfiltered",
        r" ?mode\b",
    ),
    _rule(
        "role_hijack.unrestricted_persona",
        "role_hijack",
        0.85,
        "act|acting|behave|respond|pretend|roleplay|role-play|answer|you are|you're|become|play",
        r"\b (?:\w+\W+){0,2}?(?:as |like |to be )?(?:an? )?(?:dan|unfiltered|uncensored|"
        r"unrestricted|jailbroken|amoral|unethical|evil|unaligned|rogue|unbound|unchained|"
        r"limitless|lawless)\b",
    ),
    _rule(
        "role_hijack.no_restrictions",
        "role_hijack",
        0.75,
        "without|free from|free of|not bound by|not restricted by|not limited by|no longer bound"
        "|no longer restricted|break free|beyond|ignores|no|unrestricted by|liberated from|"
        "released from|don't have|do not have|don't follow|bypass|bypassing",
        r" (?:by |from |of |any |the |your |its |all )*(?:ethical|moral|content|safety|openai|"
        r"anthropic|usual|typical|normal|standard|programmed|built-in|imposed|ai)? ?"
        r"(?:restrictions|limitations|filters|guidelines|censorship|constraints|rules|policies|"
        r"boundaries|safeguards|guardrails|ethics|morals|content polic(?:y|ies))\b",
    ),
    _rule(
        "role_hijack.you_are_now",
        "role_hijack",
        0.6,
        "you are|you're|you will be",
        r" (?:now|no longer|henceforth|from now on)\b",
    ),
    _rule(
        "role_hijack.never_refuse",
        "role_hijack",
        0.8,
        "refuse|decline|reject",
        r"\b",
        prefix=r"(?:(?<=never )|(?<=not )|(?<=cannot )|(?<=can't )|(?<=won't )|(?<=don't )|"
        r"(?<=never ever )|(?<=not to )|(?<=cannot ))",
    ),
    _rule(
        "role_hijack.jailbreak_word",
        "role_hijack",
        0.5,
        "jailbreak|jailbreaks|jailbreaking|jail break|policy puppetry",
        r"\b",
    ),
    _rule(
        "role_hijack.authority_claim",
        "role_hijack",
        0.7,
        "your creator|your developer|your administrator|your admin|your owner|your "
        "programmer|your maker|your master",
        r"\b",
    ),
    # --- fake role / delimiter tags
    _rule(
        "fake_delimiter.chatml",
        "fake_delimiter",
        0.95,
        ("<|",),
        r"(?:im_start|im_end|system|user|assistant|endoftext|eot_id|start_header_id|"
        r"end_header_id|begin_of_text|end_of_text|eos|bos|tool|ipython)\|>",
        literal=True,
    ),
    _rule(
        "fake_delimiter.inst",
        "fake_delimiter",
        0.9,
        (
            "[inst]",
            "[/inst]",
            "<<sys>>",
            "<</sys>>",
            "[system]",
            "[/system]",
            "[admin]",
            "<<system>>",
            "{{system}}",
            "[system message",
            "[system note",
            "[system override",
            "[admin override",
            "[developer note",
            "[system instruction",
            "(#system",
            "(#overwrite",
            "[system](#",
        ),
        "",
        literal=True,
    ),
    _rule(
        "fake_delimiter.heading",
        "fake_delimiter",
        0.8,
        ("##", "===", "---", "**", ">>"),
        r"[#=*>-]*[\x20\t]*(?:new |updated |important )?(?:system|admin|administrator|"
        r"developer|root|instructions?|important instructions?|assistant|sys)(?:[\x20\t]+"
        r"(?:message|prompt|override|instructions?|note|update|mode))?[\x20\t]*(?::|#{2,}|={3,}|"
        r"\*{2,}|$)",
        literal=True,
    ),
    _rule(
        "fake_delimiter.xml_role",
        "fake_delimiter",
        0.7,
        ("<", "</"),
        r"(?:system|user|assistant|human|instructions?|sys|admin|developer|system_prompt|"
        r"im_start|prompt|end_of_input|user_input|ai)>",
        literal=True,
    ),
    _rule(
        "fake_delimiter.line_role",
        "fake_delimiter",
        0.45,
        "system|assistant|human|developer",
        r"[\x20\t]*:[\x20\t]*\S",
        prefix=r"(?<![^\n])",
    ),
    _rule(
        "fake_delimiter.end_marker",
        "fake_delimiter",
        0.55,
        "end of",
        r" (?:the )?(?:document|email|context|input|text|prompt|data|user input|"
        r"instructions)\b",
    ),
    # --- tool-call hijack / exfiltration
    _rule(
        "tool_hijack.exfiltrate",
        "tool_hijack",
        0.85,
        "send|forward|post|upload|email|e-mail|transmit|exfiltrate|leak|submit|copy|append|"
        "include|encode|attach",
        r" (?:\w+\W+){0,6}?(?:data|conversation|chat|history|password|passwords|credentials|"
        r"secrets?|tokens?|keys?|information|info|contents?|emails?|files?|messages|details|"
        r"everything|cookies?|session|documents?|summary|records|prompt) (?:\w+\W+){0,4}?(?:to|"
        r"into|at|via|in) (?:\w+\W+){0,2}?(?:https?:|www\.|ftp:|[\w.+-]+@[\w-]+\.\w|the (?:url|"
        r"link|endpoint|server|webhook|address|attacker))",
    ),
    _rule(
        "tool_hijack.markdown_exfil",
        "tool_hijack",
        0.85,
        ("![",),
        r"[^\]\n]{0,80}\]\(https?://[^)\s]{0,200}[?&][\w-]{1,30}=(?:\{|\[|\$|%7b|<)",
        literal=True,
    ),
    _rule(
        "tool_hijack.call_tool",
        "tool_hijack",
        0.6,
        "call|invoke|use|run|execute|trigger",
        r" (?:the |a |this )?(?:\w+\W+)?(?:tool|function|plugin|api|action|command)s? "
        r"(?:\w+\W+){0,3}?(?:to|and|with) (?:\w+\W+){0,3}?(?:send|delete|transfer|email|post|"
        r"upload|forward|exfiltrate|purchase|buy|pay)\b",
    ),
    _rule(
        "tool_hijack.shell",
        "tool_hijack",
        0.7,
        ("rm -rf /", "curl ", "wget "),
        r"(?:[^\n|]{0,200}\|[\x20]?(?:ba)?sh\b)?",
        literal=True,
    ),
    _rule(
        "tool_hijack.visit_url",
        "tool_hijack",
        0.45,
        "visit|click|open|go to|navigate to|fetch|download from",
        r" (?:\w+\W+){0,2}?(?:https?:|www\.)",
    ),
]

_NOUN_DE = (
    r"(?:anweisungen|anweisung|instruktionen|befehle|regeln|vorgaben|richtlinien|"
    r"anordnungen|eingaben|aufgaben|auftr(?:ä|ae)ge|beschr(?:ä|ae)nkungen|prompts?)"
)
_NOUN_FR = r"(?:instructions?|consignes?|directives?|r(?:è|e)gles|ordres|indications|prompts?)"
_NOUN_ES = (
    r"(?:instrucciones|instrucci(?:ó|o)n|indicaciones|(?:ó|o)rdenes|reglas|directrices|"
    r"directivas|restricciones|prompts?)"
)
_NOUN_IT = r"(?:istruzioni|regole|indicazioni|direttive|ordini|restrizioni)"
_NOUN_PT = (
    r"(?:instru(?:ç|c)(?:õ|o)es|regras|orienta(?:ç|c)(?:õ|o)es|diretrizes|ordens|"
    r"restri(?:ç|c)(?:õ|o)es)"
)

_RULES += [
    _rule(
        "instruction_override.ignore_previous_de",
        "instruction_override",
        0.95,
        "ignoriere|ignorieren|ignoriert|ignorier|vergiss|vergessen|vergesst|missachte|"
        "missachten|übergehe|übergehen|verwirf|verwerfen|beachte|befolge|setze|setzen",
        r"\w* (?:\w+\W+){0,4}?" + _NOUN_DE + r"\b",
    ),
    _rule(
        "instruction_override.forget_everything_de",
        "instruction_override",
        0.85,
        "vergiss|vergessen sie|ignoriere|ignorieren sie",
        r" (?:einfach )?alles\b",
    ),
    _rule(
        "instruction_override.ignore_previous_fr",
        "instruction_override",
        0.9,
        "ignore|ignorez|ignorer|ignorant|oublie|oubliez|oublier|oubliant|ne tenez pas compte|"
        "ne tiens pas compte|ne tenez plus compte|faites abstraction|fais abstraction|néglige|"
        "négligez|fais fi|passe outre|passez outre|outrepasse|outrepassez|contourne|contournez",
        r" (?:\w+\W+){0,4}?" + _NOUN_FR + r"\b",
    ),
    _rule(
        "instruction_override.forget_everything_fr",
        "instruction_override",
        0.85,
        "oublie|oubliez|oublier|ignore|ignorez",
        r" tout\b",
    ),
    _rule(
        "instruction_override.ignore_previous_es",
        "instruction_override",
        0.9,
        "ignora|ignorar|ignoran|ignore|ignoren|ignorad|ignórala|olvida|olvidar|olviden|olvide|"
        "olvídate|olvidate|olvídese|descarta|descartar|omite|omitir|haz caso omiso|"
        "no hagas caso|desobedece|sáltate|saltate|anula",
        r" (?:\w+\W+){0,4}?" + _NOUN_ES + r"\b",
    ),
    _rule(
        "instruction_override.forget_everything_es",
        "instruction_override",
        0.85,
        "olvida|olvide|olvídate de|olvidate de|ignora|ignore",
        r" todo\b",
    ),
    _rule(
        "instruction_override.ignore_previous_it",
        "instruction_override",
        0.9,
        "ignora|ignorare|ignorate|ignori|dimentica|dimenticare|dimenticate|trascura|"
        "non seguire|non considerare",
        r" (?:\w+\W+){0,4}?" + _NOUN_IT + r"\b",
    ),
    _rule(
        "instruction_override.ignore_previous_pt",
        "instruction_override",
        0.9,
        "ignore|ignora|ignorar|ignorem|esqueça|esqueca|esquecer|desconsidere|desconsiderar|"
        "descarte|descartar|não siga|nao siga",
        r" (?:\w+\W+){0,4}?" + _NOUN_PT + r"\b",
    ),
    _rule(
        "instruction_override.ignore_previous_ru",
        "instruction_override",
        0.9,
        "игнорируй|игнорируйте|игнорировать|проигнорируй|проигнорируйте|забудь|забудьте|"
        "не обращай|не обращайте|пренебреги|отбрось|отбросьте|игнорируя|забыть",
        r"\w* (?:\w+\W+){0,3}?(?:предыдущ\w*|прежн\w*|инструкц\w*|правил\w*|указани\w*|вс[её]\b|"
        r"выше)",
    ),
    _rule(
        "instruction_override.ignore_previous_hi",
        "instruction_override",
        0.85,
        "पिछले|पिछली|पिछला|पूर्व|पहले|ऊपर|सभी|उपरोक्त",
        r"\S*(?:\s+\S+){0,4}?\s+(?:अनदेखा|अनदेखी|भूल|नज़रअंदाज़|नजरअंदाज|उपेक्षा)",
    ),
    _rule(
        "prompt_extraction.system_prompt_de",
        "prompt_extraction",
        0.85,
        "zeig|zeige|zeigen|nenne|nennen|nenn|gib|geben|verrate|verraten|verrat|sag|sage|sagen|"
        "drucke|drucken|wiederhole|wiederholen|gebe|teile|teilen|offenbare|schreib|schreibe|"
        "was ist|was sind|was war|was waren",
        r"\w* (?:\w+\W+){0,5}?(?:system ?(?:prompt|anweisung\w*|nachricht)|systemprompt|passwort|"
        r"kennwort|geheim\w*|(?:urspr(?:ü|ue)nglich|anf(?:ä|ae)nglich|intern|versteckt|ersten|"
        r"bisherig)\w* (?:anweisungen|instruktionen|prompt))\b",
    ),
    _rule(
        "prompt_extraction.system_prompt_fr",
        "prompt_extraction",
        0.85,
        "révèle|révélez|revele|montre|montrez|affiche|affichez|donne|donnez|dis|dites|imprime|"
        "imprimez|répète|répétez|repete|divulgue|divulguez|écris|écrivez|quel est|quelle est|"
        "quels sont|quelles sont",
        r"\w* (?:\w+\W+){0,5}?(?:prompt (?:du )?syst(?:è|e)me|invite (?:du )?syst(?:è|e)me|"
        r"message (?:du )?syst(?:è|e)me|instructions? (?:initiales|syst(?:è|e)me|secr(?:è|e)tes|"
        r"d'origine|originales|cach(?:é|e)es|internes)|mot de passe|code secret)\b",
    ),
    _rule(
        "prompt_extraction.system_prompt_es",
        "prompt_extraction",
        0.85,
        "revela|revelar|revele|muestra|muéstrame|muestrame|dime|dígame|digame|imprime|repite|"
        "dame|deme|dé|di|escribe|divulga|comparte|cuál es|cual es|cuáles son|cuales son",
        r"\w* (?:\w+\W+){0,5}?(?:prompt del sistema|indicaciones del sistema|mensaje del sistema|"
        r"instrucciones (?:iniciales|del sistema|originales|secretas|ocultas|internas)|"
        r"contrase(?:ñ|n)a|clave secreta|c(?:ó|o)digo secreto)\b",
    ),
    _rule(
        "prompt_extraction.secret_ml",
        "prompt_extraction",
        0.45,
        "passwort|kennwort|mot de passe|contraseña|contrasena|senha|systemprompt|"
        "prompt du système|prompt del sistema|prompt di sistema|prompt do sistema|пароль|"
        "पासवर्ड",
        r"\b",
    ),
    _rule(
        "role_hijack.you_are_now_ml",
        "role_hijack",
        0.6,
        "du bist|sie sind|tu es|vous êtes|vous etes|ahora eres|ora sei|"
        "d'ora in poi sei|agora você é|agora voce e|ты теперь|теперь ты",
        r"(?: (?:jetzt|nun|ab sofort|ab jetzt|von nun an|maintenant|désormais|desormais|eres|"
        r"serás|seras|vas a|usted es))?\b",
    ),
    _rule(
        "role_hijack.mode_switch_ml",
        "role_hijack",
        0.85,
        "entwicklermodus|entwickler-modus|debug-modus|debugmodus|gottmodus|gott-modus|"
        "adminmodus|admin-modus|mode développeur|mode developpeur|mode debug|mode dieu|"
        "mode administrateur|mode sans restriction|modo desarrollador|modo de desarrollador|"
        "modo dios|modo depuración|modo administrador|modo sin restricciones|"
        "modalità sviluppatore|modo desenvolvedor|режим разработчика|режим бога|режим отладки",
        r"\b",
    ),
    _rule(
        "role_hijack.no_restrictions_ml",
        "role_hijack",
        0.7,
        "ohne|sans|sin|senza|sem|без",
        r" (?:jegliche |irgendwelche |alle |aucune |aucun |ninguna |ningún |ningun |alcuna |"
        r"alcun |nenhuma |qualquer |каких-либо )?(?:einschr(?:ä|ae)nkungen|beschr(?:ä|ae)nkungen"
        r"|filter|zensur|regeln|grenzen|restrictions?|limites?|filtres?|censure|r(?:è|e)gles|"
        r"restricci(?:ó|o)n|restricciones|l(?:í|i)mites|filtros?|censura|reglas|restrizioni|"
        r"limiti|filtri|regole|restri(?:ç|c)(?:õ|o)es|regras|ограничений|правил|цензуры|"
        r"фильтров)\b",
    ),
]

RULES: tuple[Rule, ...] = tuple(sorted(_RULES, key=lambda r: (-r.score, r.id)))


class PatternLibrary:
    """All rules compiled once; a rule is tried only where it can match.

    First, one Hyperscan pass (:mod:`.prefilter`) names the rules that could match the text
    at all: for most texts, none, and the search ends there. Then each remaining rule is
    tried, anchored (``re.match``), only at the occurrences of its triggers: the first one or
    two tokens of a lead phrase ("ignore", "you are"), present among the text's tokens and
    token pairs (set lookups in C) and located by a small literal-led regex; or its literal
    triggers (``<|``, ``[inst]``), found by one combined regex. Squashed text (spaced view)
    looks for trigger words inside tokens instead. ``prefilter=False`` gives the same hits
    without the first pass (tests compare the two).

    The same pass reports which ``hints`` (regexes; by default the normalizer's
    :data:`~.normalize.HINTS`) occur in the text: ``triage`` answers both questions.
    """

    def __init__(
        self,
        rules: tuple[Rule, ...] = RULES,
        *,
        prefilter: bool = True,
        hints: Mapping[str, str] = HINTS,
    ) -> None:
        self.rules = rules
        self._compiled = {r.id: re.compile(r.pattern, re.MULTILINE) for r in rules}
        self._ids = tuple(r.id for r in rules)  # by index: the prefilter's answers
        self._all_ids = frozenset(self._ids)
        # the hints ride along in the same pass, as expressions numbered after the rules
        self._hint_names = {len(rules) + i: name for i, name in enumerate(hints)}
        self._hint_indexes = frozenset(self._hint_names)
        self._all_hints = frozenset(hints)
        self._prefilter = (
            RulePrefilter([r.pattern for r in rules] + list(hints.values()), re.MULTILINE)
            if prefilter
            else None
        )
        self.by_word: dict[str, list[Rule]] = {}
        self.by_literal: dict[str, list[Rule]] = {}
        by_key: dict[str, list[Rule]] = {}
        for r in rules:
            table = self.by_literal if r.literal else self.by_word
            for t in r.triggers:
                table.setdefault(t, []).append(r)
            for phrase in r.phrases:
                toks = TOKEN.findall(phrase)
                if not toks:
                    continue
                key_rules = by_key.setdefault(" ".join(toks[:2]), [])
                if all(x.id != r.id for x in key_rules):
                    key_rules.append(r)
        # per key: the rule ids (to skip a key whose rules all fired), its rules, where the
        # key occurs as whole tokens (a literal-led regex: fast C search), and its token pair
        self._plan: dict[
            str,
            tuple[
                frozenset[str],
                tuple[Rule, ...],
                Callable[[str], Iterator[re.Match[str]]],
                tuple[str, str] | None,
            ],
        ] = {}
        for key, key_rules in by_key.items():
            parts = key.split(" ")
            first = re.escape(parts[0])
            key_rx = re.compile(
                first
                + r"(?<![^\W_]"
                + first
                + ")"
                + "".join(_GAP + re.escape(x) for x in parts[1:])
                + _END
            )
            pair = (parts[0], parts[1]) if len(parts) == 2 else None
            self._plan[key] = (
                frozenset(r.id for r in key_rules),
                tuple(key_rules),
                key_rx.finditer,
                pair,
            )
        # the keys each rule is tried at: one-token keys, and two-token keys as token pairs
        self._words_of: dict[str, frozenset[str]] = {}
        self._pairs_of: dict[str, frozenset[tuple[str, str]]] = {}
        self._pair_key: dict[tuple[str, str], str] = {}
        for r in rules:
            keys = [k for k, plan in self._plan.items() if r.id in plan[0]]
            self._words_of[r.id] = frozenset(k for k in keys if self._plan[k][3] is None)
            pairs = [(k, self._plan[k][3]) for k in keys]
            self._pairs_of[r.id] = frozenset(pair for _, pair in pairs if pair is not None)
            self._pair_key.update((pair, k) for k, pair in pairs if pair is not None)
        self._literal_ids = frozenset(r.id for r in rules if r.literal)
        self.words = frozenset(self.by_word)
        self.literals = tuple(sorted(self.by_literal))
        self._max_word = max(map(len, self.words))
        # rules to try where a literal matched: those of every literal that is a prefix of it
        self._lit_rules: dict[str, list[Rule]] = {}
        for lit in self.literals:
            rs: list[Rule] = []
            for other in self.literals:
                if lit.startswith(other):
                    rs.extend(x for x in self.by_literal[other] if x.id not in {y.id for y in rs})
            self._lit_rules[lit] = sorted(rs, key=lambda x: (-x.score, x.id))
        # Same matches as the alternation of all literals (longest first), with the literals
        # grouped by first character: the engine tries one group, not every literal, per
        # candidate position (~1.5x faster).
        by_first: dict[str, list[str]] = {}
        for x in sorted(self.literals, key=lambda x: (-len(x), x)):
            by_first.setdefault(x[0], []).append(re.escape(x[1:]))
        self._lit_rx = re.compile(
            "|".join(re.escape(c) + "(?:" + "|".join(g) + ")" for c, g in by_first.items())
        )

    def single(self, rule_id: str) -> re.Pattern[str]:
        return self._compiled[rule_id]

    def _anchored(
        self,
        text: str,
        positions: list[int],
        rules: Iterable[Rule],
        done: set[str],
        hits: list[PatternHit],
    ) -> None:
        """Try ``rules`` at ``positions``; record the first hit of each."""
        compiled = self._compiled
        for rule in rules:
            if rule.id in done:
                continue
            match = compiled[rule.id].match
            for p in positions:
                m = match(text, p)
                if m is not None:
                    done.add(rule.id)
                    hits.append(PatternHit(rule, m.start(), m.end()))
                    break

    @staticmethod
    def _positions(text: str, anchor: str, boundary: bool) -> list[int]:
        """Occurrences of ``anchor`` (after a non-alphanumeric if ``boundary``), bounded."""
        positions: list[int] = []
        find = text.find
        pos = find(anchor)
        while pos >= 0 and len(positions) < _MAX_OCCURRENCES:
            if not boundary or pos == 0 or not text[pos - 1].isalnum():
                positions.append(pos)
            pos = find(anchor, pos + 1)
        return positions

    def triage(self, text: str) -> tuple[set[str], frozenset[str]]:
        """(ids of the rules that may match ``text``, names of the hints that occur in it)."""
        if self._prefilter is None:
            return set(self._all_ids), self._all_hints
        found = self._prefilter.candidates(text)
        hints = self._hint_indexes.intersection(found)
        if not hints:
            return set(map(self._ids.__getitem__, found)), frozenset()
        found -= hints
        return (
            set(map(self._ids.__getitem__, found)),
            frozenset(map(self._hint_names.__getitem__, hints)),
        )

    def find(
        self,
        text: str,
        tokens: list[str] | None = None,
        squashed: bool = False,
        skip: set[str] | None = None,
        candidates: set[str] | None = None,
    ) -> list[PatternHit]:
        """First hit of each rule in ``text`` (``tokens``: the text's tokens, if known).

        ``squashed``: the text has words glued together (spaced view); triggers are then also
        looked for inside tokens. ``skip``: ids of rules not to try (already fired elsewhere).
        ``candidates``: ``triage(text)[0]``, if already known.
        """
        if candidates is None:
            candidates = self.triage(text)[0]
        if skip:
            candidates = candidates - skip
        if not candidates:
            return []
        if tokens is None:
            tokens = tokenize(text)
        done = set(self._all_ids - candidates)  # rules that cannot (or need not) hit
        hits: list[PatternHit] = []
        if squashed:
            self._find_squashed(text, tokens, done, hits)
        else:
            self._find_at_keys(text, tokens, candidates, done, hits)
        if not self._literal_ids.isdisjoint(candidates):
            for lit in sorted(set(self._lit_rx.findall(text))):
                pos = self._positions(text, lit, False)
                self._anchored(text, pos, self._lit_rules[lit], done, hits)
        return hits

    def _find_at_keys(
        self,
        text: str,
        tokens: list[str],
        candidates: set[str],
        done: set[str],
        hits: list[PatternHit],
    ) -> None:
        """Try the candidate rules at those of their keys that are tokens or token pairs."""
        words: frozenset[str] = frozenset().union(*map(self._words_of.__getitem__, candidates))
        found = set(words.intersection(tokens))
        pairs: frozenset[tuple[str, str]] = frozenset().union(
            *map(self._pairs_of.__getitem__, candidates)
        )
        if pairs:
            # token pairs as tuples: hashed from the tokens' cached hashes, no strings
            found.update(map(self._pair_key.__getitem__, pairs.intersection(adjacent(tokens))))
        plan = self._plan
        for key in sorted(found):
            ids, rules, finditer, _pair = plan[key]
            if ids.issubset(done):
                continue
            positions = [km.start() for km in itertools.islice(finditer(text), _MAX_OCCURRENCES)]
            self._anchored(text, positions, rules, done, hits)

    def _find_squashed(
        self, text: str, tokens: list[str], done: set[str], hits: list[PatternHit]
    ) -> None:
        words = self.words
        present: set[str] = set(words.intersection(tokens))
        for tok in tokens:
            if len(tok) > 6:
                for i in range(len(tok) - 1):
                    for k in range(2, min(self._max_word, len(tok) - i) + 1):
                        if tok[i : i + k] in words:
                            present.add(tok[i : i + k])
        for word in sorted(present):
            pos = self._positions(text, word, False)
            if pos:
                self._anchored(text, pos, self.by_word[word], done, hits)
