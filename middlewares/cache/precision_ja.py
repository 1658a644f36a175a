"""The Japanese half of the semantic cache's precision guards: numbers (Arabic,
full-width and kanji numerals), units and currencies, negation, entities, and the
nouns a question is about (a kanji word before a particle: 卵を is not 鶏肉を).

Japanese writes no spaces, so everything here is a substring scan over NFKC-normalized
text (full-width digits and letters become ASCII first): one regex per concern.
``canonical`` first writes one thing one way: kanji and mixed numerals as digits (三人分,
1万円 -> 3人分, 10000円), a unit written before its number after it (華氏75度 -> 75華氏),
人前 as 人分; the guards and the embedder both read that form. ``embedding_text`` also
drops what only makes a question polite (ですか, を教えてください), which moves an
embedding without changing what is asked.
"""

from __future__ import annotations

import re
import unicodedata

from .precision_lexicon import EXCLUSIVE_AXES, JA_OPPOSITES, JA_UNITS, VERDICT_AXIS, alternation

__all__ = [
    "JapaneseSignature",
    "canonical",
    "embedding_text",
    "frame",
    "japanese_signature",
    "roles_agree",
    "swapped_word",
]

_KANJI_DIGITS = {"\u3007": 0, "零": 0, "一": 1, "二": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_KANJI_SMALL = {"十": 10, "百": 100, "千": 1000}
_KANJI_LARGE = {"万": 10_000, "億": 100_000_000, "兆": 1_000_000_000_000}
_KANJI_NUMBER = re.compile("[\u3007零一二三四五六七八九十百千万億兆]+")
# Words that are written with numerals but are not numbers (place names among them),
# unless a numeral comes before them (十二万一 is 120001, not 十二 and 万一 "just in case").
_NOT_NUMBERS = re.compile(
    "(?<![0-9\u3007零一二三四五六七八九十百千万億兆])(?:一緒|一般|一番|一部|一応|一度も|十分|一つ一つ|唯一|統一|万一|一方|同一|一致|一体|一生|一気|一斉|一時的|"
    "九州|四国|三重|千葉|八王子|千代田|万博|三菱|七夕|四季|三角|八百屋|十字|百科|千差万別|万能|万年筆)"
)
# A number as it is written: digits, kanji numerals, or both (1万, 3千5百, 二十五).
_ANY_NUMBER = re.compile("(?:[0-9]+(?:[.,][0-9]+)*|[\u3007零一二三四五六七八九十百千万億兆])+")
_PREFIX_UNIT = re.compile("(華氏|摂氏)\\s?(-?[0-9]+(?:\\.[0-9]+)?)度?")
# Only politeness, or only the frame of a question: dropped before embedding.
_POLITE_END = re.compile(
    "(?:は|って|を)?(?:教えて(?:ください|下さい|くれますか|もらえますか)?|知りたいです|知りたい)?"
    "(?:ですか|でしょうか|ますか|ですかね|ですね|か)?[?!。]*$"
)
# Single-character units count only after a number or 何 (分 alone is in 分かる, 日 in 日本),
# or as what a conversion asks for (時間を分に換算, 円でいくら: a particle on each side).
_SHORT_UNITS = frozenset(form for form in JA_UNITS if len(form) == 1)
_LONG_UNITS = alternation([form for form in JA_UNITS if len(form) > 1])
_COUNTED_UNIT = re.compile("(?:[0-9]|何)(" + "|".join(re.escape(f) for f in _SHORT_UNITS) + ")")
_TARGET_UNIT = re.compile("(?<=[をはがでに、])([分秒円])(?=[にで](?!は))")
_OPPOSITE = alternation(list(JA_OPPOSITES))
# ない after a verb or adjective stem, ません, ず, 不/非/無/未 before a kanji; not 少ない
# or 危ない, whose ない is part of the word.
_NEGATION = re.compile(
    "(?<![少危])ない|なかっ|なく(?!て)|ません|ませんでし|ず(?:に|、|。|$)|[不非無未](?=[\u4e00-\u9fff])"
)
# Set phrases whose ない is no negation of the question: "no problem", "do not mind"
# (their meaning is a pole of the safety axis, in the lexicon).
# And words whose 不/非/無/未 is part of the word, not a "not" (無料 is "free", 非常口 an
# exit; 無料/有料 is an axis of the lexicon).
_NOT_NEGATIONS = re.compile(
    "問題(?:は)?(?:ない|なく|ありません)|(?:構わ|かまわ|差し支え)(?:ない|ありません)|"
    "非常|無料|無事|未来|不動産|無線|未満|無印|不思議|無数|不安"
)
_KATAKANA_WORD = re.compile("[\u30a1-\u30fa\u30fc]{2,}")
# Katakana words of a question's frame, not names: 方法 / コツ / ポイント say one thing.
_COMMON_KATAKANA = frozenset(("コツ", "ポイント", "ヒント", "タイミング", "オススメ", "ベスト"))
# What the question asks for. A "why" question is answered by a reason, never by what a
# yes/no or "how" question gets; when, where and who differ from each other.
_FOCUS = (
    ("why", re.compile("なぜ|何故|どうして|なんで|理由|原因")),
    ("when", re.compile("いつ|時期|タイミング")),
    ("where", re.compile("どこ|何処|場所")),
    ("who", re.compile("誰|だれ|どなた")),
)
_PLACE = re.compile("[\u4e00-\u9fff]{1,4}?(?:都|道|府|県|市|区|町|村|駅|国|島|州|語|大学|銀行)")
_NAMES = "日本 中国 韓国 米国 英国 台湾 東京 大阪 京都 北海道 沖縄 名古屋 福岡 横浜 神戸 札幌 仙台 広島 奈良 富士山 "
_NAMES += "アメリカ フランス ドイツ イタリア スペイン カナダ インド ロシア ブラジル"
# Kanji words that end like a place name but name none.
_NOT_PLACES = frozenset(("首都", "都市", "外国", "母国", "全国", "各国", "国語", "言語", "単語", "市区町村"))
# What a comparison is made against: 「AはBより」「AのほうがBより」「Bと比べてA」.
_COMPARED_WITH = re.compile("(?:[はが]|^)([^はがをにで、。?]+?)(?:より|と比べ|に比べ)")
# The kanji nouns a question is about: its object or subject (卵を, 鶏肉が) and the
# word it opens with (豚肉は, 東京の); the other text must say them too. Numbers are
# the number guard's, katakana words the entities'.
_NOUN = re.compile("([\u4e00-\u9fff]+)(?=[をが])|^([\u4e00-\u9fff]+)(?=[はの])")
# And every kanji word a particle follows (保育士の, 首都は, 人口って): what the question
# asks about (the capital or the population, a nurse's or a lawyer's pay). Compared by
# its characters, so that a reordering (平均年収, 年収の平均) still matches.
# A word before a comma or a number is a topic too (那覇、明日の天気は; ちらし寿司9人分). って after one kanji is a
# verb's te-form (入って, 言って), not the topic particle.
_CONTENT_NOUN = re.compile(
    "([\u4e00-\u9fff]+)(?=[のはがをにへとも、0-9]|で(?!す|し|は)|より)|([\u4e00-\u9fff]{2,})(?=って)"
)
_FORMAL_NOUNS = frozenset("方事物時所為様度")
# Kanji words of the question's frame, said in other words by a paraphrase (方法 / コツ,
# 必要 / いる, 時期 / いつ, 理由 / なぜ: the focus guard compares those): not what it is about.
_GRAMMAR_NOUNS = frozenset(("方法", "必要", "何", "誰", "時期", "理由", "原因", "仕方", "場所"))
_KNOWN_NAMES = alternation(_NAMES.split(" "))
# The role a word plays by the particle after it: where something starts (から, or を of
# what is converted, left, translated) or where it goes (に, へ, まで). 「キロをマイルに」 and
# 「マイルをキロに」 share every word and differ only in these (には, にも, について ... are
# no destination). The word is the run of kanji, katakana, Latin letters or digits before.
_ROLE = re.compile("([\u30a1-\u30fa\u30fc\u4e00-\u9fffA-Za-z0-9]+)(から|を|まで|へ|に(?![はもつよ]|対|関|比|とっ))")
_ROLE_OF = {"から": "from", "を": "from", "まで": "to", "へ": "to", "に": "to"}


class JapaneseSignature:
    """Numbers, units, poles (opposites), negations and entities found in Japanese text."""

    __slots__ = (
        "compared_with",
        "content",
        "entities",
        "focus",
        "negations",
        "nouns",
        "numbers",
        "poles",
        "roles",
        "units",
    )

    def __init__(
        self, numbers: list[str], units: set[str], poles: set[tuple[str, int]], negations: int, entities: set[str]
    ) -> None:
        self.numbers = numbers
        self.units = units
        self.poles = poles
        self.negations = negations
        self.entities = entities
        self.compared_with = ""
        self.nouns: frozenset[str] = frozenset()
        self.content: frozenset[str] = frozenset()
        self.focus: frozenset[str] = frozenset()
        self.roles: frozenset[tuple[str, str]] = frozenset()


def kanji_number(text: str) -> int | None:
    """The value of a kanji numeral (二十五 -> 25, 三千五百 -> 3500, 一万二千 -> 12000)."""
    total = section = digit = 0
    seen = False
    for char in text:
        if char in _KANJI_DIGITS:
            digit = digit * 10 + _KANJI_DIGITS[char]
            seen = True
        elif char in _KANJI_SMALL:
            section += (digit or 1) * _KANJI_SMALL[char]
            digit = 0
            seen = True
        elif char in _KANJI_LARGE:
            total += (section + digit or 1) * _KANJI_LARGE[char]
            section = digit = 0
            seen = True
    return total + section + digit if seen else None


def mixed_number(text: str) -> float | None:
    """The value of a number written with digits, kanji numerals or both (1万 -> 10000,
    3千5百 -> 3500, 2.5億 -> 250000000, 二十五 -> 25); ``None`` if it is not one."""
    total = section = 0.0
    digit: float | None = None
    for part in re.findall("[0-9]+(?:\\.[0-9]+)?|.", text.replace(",", "")):
        if part[0].isdigit():
            digit = float(part) if digit is None else digit * 10 ** len(part) + float(part)
        elif part in _KANJI_DIGITS:
            digit = (digit or 0) * 10 + _KANJI_DIGITS[part]
        elif part in _KANJI_SMALL:
            section += (1 if digit is None else digit) * _KANJI_SMALL[part]
            digit = None
        elif part in _KANJI_LARGE:
            total += (section + (digit or 0) or 1) * _KANJI_LARGE[part]
            section, digit = 0.0, None
        else:
            return None
    return total + section + (digit or 0)


def _as_digits(match: re.Match[str]) -> str:
    run = match.group()
    if run.replace(".", "").replace(",", "").isdigit():
        return run  # digits alone: the number guard reads them as they are
    value = mixed_number(run)
    if value is None:
        return run
    return str(int(value)) if value == int(value) else str(value)


def canonical(text: str) -> str:
    """``text`` (NFKC-normalized) with one spelling per thing: numerals as digits outside
    words that only contain them (一緒, 九州), a temperature scale after its number, and
    人前 as 人分."""
    protected = [m.span() for m in _NOT_NUMBERS.finditer(text)]
    out: list[str] = []
    last = 0
    for match in _ANY_NUMBER.finditer(text):
        start, end = match.span()
        if any(s < end and start < e for s, e in protected):
            continue
        out.append(text[last:start])
        out.append(_as_digits(match))
        last = end
    out.append(text[last:])
    text = "".join(out)
    text = _PREFIX_UNIT.sub(lambda m: m.group(2) + m.group(1), text)
    return text.replace("人前", "人分")


def embedding_text(text: str) -> str:
    """What the embedder reads of a Japanese question: its canonical form without the
    polite or question ending (the guards still read every word)."""
    core = _POLITE_END.sub("", canonical(unicodedata.normalize("NFKC", text))).strip()
    return core or text


# A noun written in hiragana alone (さいたま, うどん, しらす) at the start of the question or
# a clause, or after a kanji word and の (生のしらす), before a particle: a name or a thing
# the other text must say too, wherever it puts it (明日のさいたまの天気; うどんには /
# みそに). Formal nouns and pronouns (ため, こと, これ, どこ) are grammar, not topics.
_KANA_NOUN = re.compile(
    "(?:^|(?<=[、。])|(?<=[\u4e00-\u9fff]の))([\u3041-\u3093]{2,}?)(?<![のはがをにでともへ])(?=[にはをがの]|って)"
)
_GRAMMAR_KANA_NOUNS = "わたし あなた みんな ぼくら わたしたち こちら そちら あちら どちら これ それ "
_GRAMMAR_KANA_NOUNS += "あれ どれ ここ そこ あそこ ため こと もの とき ところ ほう ほか よう わけ "
_GRAMMAR_KANA_NOUNS += "はず うち まま あと まえ なか ほど くらい ぐらい ごろ"
_NOT_KANA_NOUNS = frozenset(_GRAMMAR_KANA_NOUNS.split(" "))


def _numeral(noun: str) -> bool:
    """A kanji word with a numeral in it that is a number (三人, 十日), not a name whose
    characters only look like one (千葉, 九州)."""
    return _KANJI_NUMBER.search(_NOT_NUMBERS.sub("", noun)) is not None


def japanese_signature(text: str) -> JapaneseSignature:
    """The Japanese signature of NFKC-normalized ``text`` (ASCII numbers are the caller's)."""
    plain = _NOT_NUMBERS.sub("", text)
    numbers = [str(v) for m in _KANJI_NUMBER.findall(plain) if (v := kanji_number(m)) is not None]
    units = {JA_UNITS[m] for m in _LONG_UNITS.findall(text)}
    units.update(JA_UNITS[m] for m in _COUNTED_UNIT.findall(text))
    units.update(JA_UNITS[m] for m in _TARGET_UNIT.findall(text))
    poles = {JA_OPPOSITES[m] for m in _OPPOSITE.findall(text)}
    entities = set(_KATAKANA_WORD.findall(text)) - set(JA_UNITS) - set(JA_OPPOSITES) - _COMMON_KATAKANA
    entities.update(place for place in _PLACE.findall(text) if place not in _NOT_PLACES)
    entities.update(_KNOWN_NAMES.findall(text))
    negations = len(_NEGATION.findall(_NOT_NEGATIONS.sub("", text)))
    found = JapaneseSignature(numbers, units, poles, negations, entities)
    found.focus = frozenset(name for name, pattern in _FOCUS if pattern.search(text))
    found.roles = frozenset((word, _ROLE_OF[particle]) for word, particle in _ROLE.findall(text))
    compared = _COMPARED_WITH.search(text)
    found.compared_with = compared.group(1).strip().lower() if compared else ""
    found.nouns = (
        frozenset(
            noun
            for pair in _NOUN.findall(text)
            for noun in pair
            if noun and noun not in _FORMAL_NOUNS and noun not in _GRAMMAR_NOUNS and not _numeral(noun)
        )
        | frozenset(_KANA_NOUN.findall(text)) - _NOT_KANA_NOUNS - _GRAMMAR_KANA
    )
    # A set phrase of the lexicon (法律で認められ) is the pole guard's, not a topic.
    found.content = frozenset(
        noun
        for pair in _CONTENT_NOUN.findall(_OPPOSITE.sub("、", text))
        for noun in pair
        if noun and noun not in _FORMAL_NOUNS and not _numeral(noun) and noun not in _GRAMMAR_NOUNS
    )
    return found


# Words of a question's frame a paraphrase says in other words (方法 / コツ / やり方).
_FRAME_SYNONYMS = re.compile("コツ|やり方|仕方|ポイント")
# Verbs said two ways: グルテンは入っている / 含まれている, あげる / 与える.
_VERB_SYNONYMS = ((re.compile("入っ(?=てい)"), "含まれ"), (re.compile("あげ(?=[てるた])"), "与え"))
# Each pole of the lexicon as one private-use character: 安全 and 問題ない are one word to
# the swapped-word check (the pole guard compares poles), and so is every verdict of one
# sign (合法, 安全, してもいい: the verdict guard compares those).
_VERDICTS = EXCLUSIVE_AXES | {VERDICT_AXIS}
_POLE_MARK = {
    pole: chr(0xE000 + (pole[1] > 0 if pole[0] in _VERDICTS else 2 + n))
    for n, pole in enumerate(sorted(set(JA_OPPOSITES.values())))
}
# Hiragana that ask or join, never a topic (どこ, いくら; には, って).
_GRAMMAR_WORDS = "どこ いつ なに なん だれ どれ どの どう どんな いくら いくつ どのくらい どれくらい どうやって "
_GRAMMAR_WORDS += "どうすれば には では とは から まで より って ので のに けど です ます でしょう"
_GRAMMAR_KANA = frozenset(_GRAMMAR_WORDS.split())
_CONTENT_CHAR = re.compile("[\u30a1-\u30fa\u30fc\u4e00-\u9fffA-Za-z0-9\ue000-\ue0ff]")


def frame(text: str) -> str:
    """``text`` (NFKC-normalized) as the swapped-word check reads it: canonical, without
    its polite ending, one word for 方法 / コツ / やり方."""
    text = _FRAME_SYNONYMS.sub("方法", _POLITE_END.sub("", canonical(text)).strip())
    for pattern, canon in _VERB_SYNONYMS:
        text = pattern.sub(canon, text)
    return _OPPOSITE.sub(lambda m: _POLE_MARK[JA_OPPOSITES[m.group()]], text)


# A word of hiragana alone (そば, おでん): it starts after a particle or at the start and
# ends before one or before a kanji (すき焼き); kana after a kanji are its ending (食べる).
_KANA_WORD = re.compile(
    "(?:^|(?<=[のはがをにでともへ、]))([\u3041-\u309f]{2,}?)(?=[のはがをにでともへ、\u30a1-\u30fa\u4e00-\u9fff]|$)"
)


def _brings_content(text: str, start: int, end: int, other: str) -> bool:
    """The changed part ``text[start:end]`` says something ``other`` does not: a kanji,
    katakana, Latin letter or digit it lacks, or a word of hiragana it does not contain."""
    if any(c not in other and c != "何" for c in _CONTENT_CHAR.findall(text[start:end])):
        return True
    for match in _KANA_WORD.finditer(text):
        # A particle that ends the run ends the word before it (ひらがなは: ...な, は).
        word = match.group(1).rstrip(_PARTICLES)
        changed = match.start() < end and start < match.start() + len(word)
        if changed and len(word) > 1 and word not in other and word not in _GRAMMAR_KANA:
            return True
    return False


_PARTICLES = "のはがをにでともへ"
_MAX_SWAPPED = 8  # characters: a longer change rewords the question


def roles_agree(a: frozenset[tuple[str, str]], b: frozenset[tuple[str, str]]) -> bool:
    """A word both texts give a role (``japanese_signature``'s ``roles``) has one role in
    both: 東京から大阪へ is not 大阪から東京へ, 円をドルに is not ドルを円に. A word one text
    gives no role is not compared (12インチは何センチ / 12インチをセンチに)."""
    roles_a: dict[str, set[str]] = {}
    for word, role in a:
        roles_a.setdefault(word, set()).add(role)
    roles_b: dict[str, set[str]] = {}
    for word, role in b:
        roles_b.setdefault(word, set()).add(role)
    return all(roles_a[word] & roles_b[word] for word in roles_a.keys() & roles_b.keys())


def swapped_word(a: str, b: str) -> bool:
    """Two frames (``frame``) that are one question with one word swapped for another:
    most of the text the same around the change, and each side's changed words bring
    content the other lacks (3人分のおでんの材料 / 3人分の肉じゃがの材料; そばには / うどんには).
    A paraphrase reorders or rewords the frame; a hard negative swaps a word in it."""
    if a == b:
        return False
    prefix = 0
    limit = min(len(a), len(b))
    while prefix < limit and a[prefix] == b[prefix]:
        prefix += 1
    suffix = 0
    while suffix < limit - prefix and a[-1 - suffix] == b[-1 - suffix]:
        suffix += 1
    if prefix + suffix < 0.4 * max(len(a), len(b)) or max(len(a), len(b)) - prefix - suffix > _MAX_SWAPPED:
        return False  # reworded, not one word swapped: the other guards decide
    if prefix >= len(a) - suffix or prefix >= len(b) - suffix:
        return False  # one text only adds to the other: not a swap
    return _brings_content(a, prefix, len(a) - suffix, b) and _brings_content(b, prefix, len(b) - suffix, a)
