"""What the `sketch` previz reads from words: a character's look from their description,
a face's expression from the caption, the weather and key props of a shot.

Pure text -> small frozen models, so the parse can be tested apart from the drawing.
Anything the words do not say is left None and the drawing picks it from a hash of the
name, so unnamed details stay consistent from shot to shot.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

RGB = tuple[int, int, int]

COLOURS: dict[str, RGB] = {
    "black": (34, 32, 36), "white": (236, 234, 228), "grey": (128, 128, 132),
    "gray": (128, 128, 132), "silver": (182, 184, 190), "charcoal": (60, 62, 68),
    "navy": (36, 46, 92), "blue": (52, 92, 170), "denim": (70, 96, 140), "red": (176, 42, 40),
    "maroon": (110, 30, 42), "burgundy": (110, 30, 42), "green": (58, 126, 70),
    "olive": (104, 110, 58), "khaki": (170, 156, 110), "yellow": (222, 190, 52),
    "mustard": (196, 160, 48), "orange": (222, 120, 42), "brown": (110, 72, 44),
    "tan": (182, 142, 100), "beige": (214, 196, 164), "cream": (236, 226, 200),
    "pink": (226, 140, 166), "purple": (112, 66, 140), "violet": (112, 66, 140),
    "teal": (40, 124, 128), "gold": (212, 170, 60), "golden": (212, 170, 60),
}
HAIR_COLOURS: dict[str, RGB] = {
    "black": (30, 26, 24), "dark": (44, 34, 28), "brown": (86, 56, 34),
    "brunette": (86, 56, 34), "chestnut": (110, 62, 36), "auburn": (140, 58, 36),
    "red": (170, 66, 34), "ginger": (190, 96, 44), "copper": (176, 90, 44),
    "blond": (214, 184, 112), "blonde": (214, 184, 112), "golden": (206, 164, 82),
    "platinum": (232, 226, 208), "grey": (150, 150, 156), "gray": (150, 150, 156),
    "silver": (196, 198, 204), "white": (232, 232, 232), "salt-and-pepper": (120, 120, 124),
}
SKIN_WORDS: dict[str, int] = {  # an index into the drawing's skin tones, light to dark
    "pale": 5, "fair": 0, "freckled": 0, "olive-skinned": 2, "tanned": 2,
    "brown-skinned": 3, "dark-skinned": 4, "black": 4,
}

_HAIR_NOUN = r"hair|bob|braid|plait|bun|ponytail|curls|locks|dreadlocks|afro|mohawk|crew[- ]cut|buzz[- ]cut"
_STYLES = (  # first match wins: the most specific words first
    ("bald", r"\bbald|shaved head|shaven head|head shaved|clean-shaven head"),
    ("shaved", r"\bbuzz[- ]cut|\bbuzzed|\bcrew[- ]cut|\bshaved\b"),
    ("braid", r"\bbraids?\b|\bplaits?\b|\bbraided"),
    ("bun", r"\bbun\b|\btopknot"),
    ("ponytail", r"\bponytail"),
    ("bob", r"\bbob\b|\bbobbed"),
    ("curly", r"\bcurly|\bcurls\b|\bafro\b|\bfrizzy"),
    ("long", r"\blong (?:\w+ ){0,2}hair|\bflowing|\bshoulder-length|\bwaist-length"),
    ("short", r"\bshort (?:\w+ ){0,2}hair|\bcropped|\bpixie"),
)
_GARMENTS = {  # the outermost visible layer first
    "coat": r"trench ?coat|overcoat|raincoat|coat|parka|cloak",
    "jacket": r"jacket|blazer|bomber",
    "overalls": r"overalls|coveralls|jumpsuit|boiler ?suit",
    "vest": r"vest|waistcoat",
    "hoodie": r"hoodie|sweatshirt",
    "sweater": r"sweater|jumper|cardigan|turtleneck|pullover",
    "dress": r"dress|gown",
    "uniform": r"uniform",
    "shirt": r"t-shirt|tee|shirt|blouse|top|tank top",
}
_TROUSER_WORDS = r"jeans|trousers|pants|slacks|skirt|shorts"


@dataclass(frozen=True)
class Look:
    """What a character's description says about how they look (None: not said)."""

    hair_style: str | None = None  # bald, shaved, short, long, bob, braid, bun, ponytail, curly
    hair: RGB | None = None
    streaks: RGB | None = None  # "grey-streaked"
    facial_hair: tuple[str, ...] = ()  # moustache, beard, goatee, stubble
    facial_hair_colour: RGB | None = None
    build: str | None = None  # heavy, thin, athletic
    tall: bool | None = None  # True tall, False short
    age: int | None = None
    sex: str | None = None  # woman, man
    glasses: str | None = None  # glasses, sunglasses
    outer: str | None = None  # the outermost garment kind
    outer_colour: RGB | None = None
    inner: str | None = None  # a layer under it (shirt, turtleneck...)
    inner_colour: RGB | None = None
    trousers: str | None = None  # jeans, trousers, skirt...
    trousers_colour: RGB | None = None
    apron: RGB | None = None
    tie: RGB | None = None
    hat: RGB | None = None
    skin: int | None = None
    freckles: bool = False
    scar: bool = False
    chain: bool = False
    headset: bool = False


def _clauses(text: str) -> list[str]:
    """Comma- and 'over'-separated pieces: 'olive jacket over a yellow t-shirt' is two."""
    parts = re.split(r",|;|\bover\b|\bwith\b|\band\b", text.lower())
    return [p.strip() for p in parts if p.strip()]


def _colour_before(clause: str, noun: str, table: dict[str, RGB]) -> RGB | None:
    """The last colour word before `noun` in the clause (the one that qualifies it)."""
    match = re.search(noun, clause)
    if not match:
        return None
    words = re.findall(r"[a-z]+(?:-[a-z]+)*", clause[:match.start()])
    for word in reversed(words):
        if word.endswith("-streaked"):
            continue
        if word in table:
            return table[word]
        base = word.split("-")[0]
        if base in table and not word.endswith(("-streaked", "-eyed", "-skinned")):
            return table[base]
    return None


def _age(text: str) -> int | None:
    decade = re.search(r"\b(early|mid|late)?[- ]?(\d)0s\b", text)
    if decade:
        offset = {"early": 2, "mid": 5, "late": 8, None: 5}[decade.group(1)]
        return int(decade.group(2)) * 10 + offset
    years = re.search(r"\b(\d{1,2})[- ](?:year[- ]old|years old|yo)\b|\baged? (\d{1,2})\b", text)
    if years:
        return int(years.group(1) or years.group(2))
    for words, age in ((r"\b(child|kid|little (?:boy|girl))\b", 9), (r"\bteen(?:age)?(?:r)?\b", 16),
                       (r"\b(elderly|old (?:man|woman)|aged|grandmother|grandfather)\b", 74),
                       (r"\bmiddle-aged\b", 50), (r"\byoung\b", 25)):
        if re.search(words, text):
            return age
    return None


def parse_look(description: str) -> Look:
    text = " ".join(description.lower().split())
    clauses = _clauses(text)
    found: dict = {}

    style = next((name for name, words in _STYLES if re.search(words, text)), None)
    if style == "shaved" and not re.search(_HAIR_NOUN, text) and "head" in text:
        style = "bald"
    found["hair_style"] = style
    for clause in clauses:
        if re.search(_HAIR_NOUN, clause):
            found["hair"] = found.get("hair") or _colour_before(clause, _HAIR_NOUN, HAIR_COLOURS)
            streak = re.search(r"([a-z]+)-streaked", clause)
            if streak and streak.group(1) in HAIR_COLOURS:
                found["streaks"] = HAIR_COLOURS[streak.group(1)]

    facial = []
    for kind, words in (("moustache", r"\bmou?stache|\bmustache"), ("beard", r"\bbeard"),
                        ("goatee", r"\bgoatee"), ("stubble", r"\bstubble")):
        for clause in clauses:
            if re.search(words, clause) and not re.search(r"\b(no|without|clean-shaven)\b", clause):
                facial.append(kind)
                found["facial_hair_colour"] = (found.get("facial_hair_colour")
                                               or _colour_before(clause, words, HAIR_COLOURS))
                break
    found["facial_hair"] = tuple(facial)

    if re.search(r"\b(heavyset|heavy-set|stocky|burly|portly|fat|chubby|heavy|beefy|barrel-chested|"
                 r"big-bellied|plump|broad)\b", text):
        found["build"] = "heavy"
    elif re.search(r"\b(wiry|thin|slim|skinny|lanky|slender|slight|gaunt|bony|willowy)\b", text):
        found["build"] = "thin"
    elif re.search(r"\b(athletic|muscular|brawny|strapping|fit)\b", text):
        found["build"] = "athletic"
    if re.search(r"\b(tall|lanky|towering|long-limbed)\b", text):
        found["tall"] = True
    elif re.search(r"\b(petite|diminutive|short(?! (?:\w+ ){0,2}(?:hair|bob|sleeves|beard|coat|jacket)))\b", text):
        found["tall"] = False
    found["age"] = _age(text)
    if re.search(r"\b(woman|girl|lady|she|her|mother|grandmother|actress)\b", text):
        found["sex"] = "woman"
    elif re.search(r"\b(man|boy|guy|he|his|father|grandfather|gentleman)\b", text):
        found["sex"] = "man"
    if re.search(r"\b(sunglasses|shades|aviators)\b", text):
        found["glasses"] = "sunglasses"
    elif re.search(r"\b(glasses|spectacles|specs|bifocals|monocle)\b", text):
        found["glasses"] = "glasses"

    layers = []  # (rank, kind, colour) of every garment named
    for clause in clauses:
        for rank, (kind, words) in enumerate(_GARMENTS.items()):
            pattern = rf"\b(?:{words})\b"
            if re.search(pattern, clause):
                layers.append((rank, kind, _colour_before(clause, pattern, COLOURS)))
                break
        if re.search(rf"\b(?:{_TROUSER_WORDS})\b", clause) and "trousers" not in found:
            kind = re.search(rf"\b(?:{_TROUSER_WORDS})\b", clause).group(0)
            found["trousers"] = kind
            found["trousers_colour"] = (_colour_before(clause, rf"\b{kind}\b", COLOURS)
                                        or (COLOURS["denim"] if kind == "jeans" else None))
        if re.search(r"\bapron\b", clause):
            found["apron"] = _colour_before(clause, r"\bapron\b", COLOURS) or COLOURS["white"]
        if re.search(r"\b(neck)?tie\b", clause):
            found["tie"] = _colour_before(clause, r"\b(neck)?tie\b", COLOURS) or COLOURS["red"]
        if re.search(r"\b(hat|cap|beanie|fedora|beret|helmet)\b", clause):
            found["hat"] = _colour_before(clause, r"\b(hat|cap|beanie|fedora|beret|helmet)\b", COLOURS) \
                or COLOURS["charcoal"]
    layers.sort(key=lambda layer: layer[0])
    if layers:
        found["outer"], found["outer_colour"] = layers[0][1], layers[0][2]
    if len(layers) > 1:
        found["inner"], found["inner_colour"] = layers[1][1], layers[1][2]
    if found.get("outer") in ("overalls", "dress") and "trousers" not in found:
        found["trousers"] = "skirt" if found["outer"] == "dress" else "overalls"
        found["trousers_colour"] = found["outer_colour"]

    found["skin"] = next((index for word, index in SKIN_WORDS.items()
                          if re.search(rf"\b{word}\b(?! (?:\w+ )?(?:hair|jacket|vest|shirt|coat))", text)), None)
    found["freckles"] = bool(re.search(r"\bfreckle", text))
    found["scar"] = bool(re.search(r"\bscar\b|\bscarred", text))
    found["chain"] = bool(re.search(r"\b(chain|necklace|pendant)\b", text))
    found["headset"] = bool(re.search(r"\b(headset|earpiece)\b", text))
    return Look(**{k: v for k, v in found.items() if v is not None})


# ---------------------------------------------------------------- the caption

_EXPRESSIONS = (  # the first that the words say wins
    ("eyes_closed", r"\b(closes? (?:his|her|their) eyes|eyes closed|asleep|sleeps|dozes|remembering|"
                    r"eyes shut)\b"),
    ("afraid", r"\b(afraid|fear|terrified|scared|frightened|panic\w*|drained of colou?r|pale|nervous\w*|"
               r"horrified|trembl\w+|shak(?:es|ing)|anxious\w*|dread)\b"),
    ("surprised", r"\b(surprised?|shocked|gasps?|eyes wide|wide-eyed|stunned|astonished|jaw drops)\b"),
    ("angry", r"\b(angry|anger|furious|rage|slams?|slaps?|glares?|shouts?|yells?|snarls?|scowls?|"
              r"punch\w*|storms?)\b"),
    ("sad", r"\b(sad|sadly|cries|crying|weeps?|tears?|sobs?|grief|griev\w+|mourns?|despair\w*|"
            r"heartbroken|alone|slumps?)\b"),
    ("happy", r"\b(smiles?|smiling|laughs?|laughing|grins?|grinning|happy|joy\w*|beams?|delighted|"
              r"cheers?)\b"),
)


def expression(text: str) -> str:
    """The face a caption asks for: neutral unless its words say otherwise."""
    lowered = text.lower()
    return next((face for face, words in _EXPRESSIONS if re.search(words, lowered)), "neutral")


def expressions(caption: str, names: list[str]) -> dict[str, str]:
    """Each character's face, read from the words that follow their tag up to the next
    one; a character whose words say nothing takes the caption's overall mood."""
    spans = list(re.finditer(r"<([^<>]+)>", caption))
    overall = expression(re.sub(r"<([^<>]+)>", r"\1", caption))
    faces = {name: overall for name in names}
    for i, match in enumerate(spans):
        end = spans[i + 1].start() if i + 1 < len(spans) else len(caption)
        face = expression(caption[match.end():end])
        if match.group(1) in faces and face != "neutral":
            faces[match.group(1)] = face
    return faces


@dataclass(frozen=True)
class SetDressing:
    """The weather and key props a shot's words name."""

    rain: bool = False
    snow: bool = False
    fog: bool = False
    rooftop: bool = False
    vault_door: str | None = None  # closed, open
    car: bool = False
    in_car: bool = False
    bulb: bool = False
    window: bool = False


def set_dressing(location: str, caption: str) -> SetDressing:
    place, words = location.lower(), f"{location} {caption}".lower()
    vault = None
    if re.search(r"\bvault\b", words):
        opened = re.search(r"vault door (?:\w+ ){0,2}(?:swings? open|opens|open)|\bopen vault\b", words)
        vault = "open" if opened else "closed"
    return SetDressing(
        rain=bool(re.search(r"\b(rain\w*|drizzle|downpour|storm\w*|rain-slick|wet asphalt)\b", words)),
        snow=bool(re.search(r"\b(snow\w*|blizzard|sleet)\b", words)),
        fog=bool(re.search(r"\b(fog\w*|mist\w*|haze|hazy|smoke|smoky|steam)\b", words)),
        rooftop=bool(re.search(r"\broof(?:top)?s?\b", place)),
        vault_door=vault,
        car=bool(re.search(r"\b(car|sedan|taxi|cab|van|truck|limo\w*|coupe)\b", words)),
        in_car=bool(re.search(r"\b(passenger seat|driver'?s seat|behind the wheel|back seat|windshield|"
                              r"dashboard)\b", words)),
        bulb=bool(re.search(r"\b(bare bulb|bulb|hanging lamp)\b", words)),
        window=bool(re.search(r"\bwindows?\b", words)),
    )
